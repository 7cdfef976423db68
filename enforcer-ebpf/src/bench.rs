//! Programs that do nothing, for `cargo xtask bench`: the cost of the BPF LSM trampoline alone on
//! a hook, beside which the enforcer's own programs are measured. Never attached in production.
use aya_ebpf::{
    macros::{lsm, raw_tracepoint},
    programs::{LsmContext, RawTracePointContext},
};

/// `settime(ts, tz)`: passes the previous verdict (argument 2) through.
#[lsm(hook = "settime")]
pub fn empty_settime(ctx: LsmContext) -> i32 {
    ctx.arg(2)
}

/// `capable(cred, ns, cap, opts)`: passes the previous verdict (argument 4) through.
#[lsm(hook = "capable")]
pub fn empty_capable(ctx: LsmContext) -> i32 {
    ctx.arg(4)
}

/// The syscall layer's tracepoints, doing nothing: the kernel's tracing path alone.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn empty_sys_enter(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn empty_sys_exit(_ctx: RawTracePointContext) -> i32 {
    0
}
