//! BPF LSM programs of enforcer. One module per hook family (`capable`, `mount`, `keys`, `time`,
//! `boot`, `tamper`, the syscall layer in `syscall`, workload arming in `arming`) over one
//! pipeline: `enforce` runs `decide` (policy lookup and counters), `emit` (events, within
//! `budget`) and `inflight` (the syscall layer's record), which read `task`, `maps` and `layout`.
#![no_std]
#![no_main]

mod arming;
#[cfg(feature = "bench")]
mod bench;
mod boot;
mod budget;
mod capable;
mod decide;
mod emit;
mod enforce;
mod inflight;
mod keys;
mod layout;
mod maps;
mod mount;
mod syscall;
mod tamper;
mod task;
mod time;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it only satisfies the compiler.
    loop {}
}

// GPL-compatible: bpf_send_signal and the tracing helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
