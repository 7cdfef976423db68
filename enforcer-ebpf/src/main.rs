//! BPF LSM programs of enforcer. One module per hook family; the shared decision logic lives in
//! `policy`, the maps in `maps`, tamper protection in `tamper`.
#![no_std]
#![no_main]

mod arming;
#[cfg(feature = "bench")]
mod bench;
mod budget;
mod capable;
mod keys;
mod layout;
mod maps;
mod mount;
mod policy;
mod syscall;
mod tamper;
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
