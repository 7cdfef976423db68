//! BPF LSM programs of enforcer. One module per hook family (`capable`, `mount`, `keys`, `time`,
//! `boot`, `tamper`, the syscall layer in `syscall`, workload arming in `arming`) over one
//! pipeline: `enforce` runs `decide` (policy lookup and counters), `emit` (events, within
//! `budget`) and `inflight` (the syscall layer's record), which read `task`, `maps` and `layout`.
#![no_std]
#![no_main]
// Integer widening stays `as` here: the same instructions, and usable in const contexts.
#![allow(
    clippy::cast_lossless,
    reason = "BPF code widens integers with `as`, also in const contexts where `From` is not usable"
)]

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
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any program that could reach this; it only satisfies the compiler.
    loop {}
}

// GPL-compatible: bpf_send_signal and the tracing helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
