//! `settime`: changes to the system clock.
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};
use enforcer_common::{Hook, Operation, args};

use crate::policy::{Detail, enforce};

/// `struct timespec64` of the kernel.
#[repr(C)]
#[derive(Clone, Copy)]
struct Timespec64 {
    tv_sec: i64,
    tv_nsec: i64,
}

/// `security_settime64(const struct timespec64 *ts, const struct timezone *tz)`: reached from
/// settimeofday, clock_settime(CLOCK_REALTIME) and stime.
#[lsm(hook = "settime")]
pub fn settime(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let ts: *const Timespec64 = ctx.arg(0);
    enforce(Operation::Settime, Hook::Settime, || {
        let mut detail = Detail::default();
        // settimeofday(NULL, tz) only sets the timezone: report -1 seconds then.
        detail.args[args::SETTIME_SEC] = -1;
        if !ts.is_null() {
            // SAFETY: reads a kernel pointer the hook was given; a fault yields Err.
            if let Ok(requested) = unsafe { bpf_probe_read_kernel(ts) } {
                detail.args[args::SETTIME_SEC] = requested.tv_sec;
                detail.args[args::SETTIME_NSEC] = requested.tv_nsec;
            }
        }
        detail
    })
    .retval()
}
