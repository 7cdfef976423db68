//! `settime`: changes to the system clock. Every path (settimeofday, clock_settime, stime,
//! adjtimex and clock_adjtime when they modify the clock) checks CAP_SYS_TIME first, and the
//! capability LSM's own `settime` check is that same capability, so the `capable` hook alone sees
//! them all, once each.
use aya_ebpf::programs::LsmContext;
use enforcer_common::{Hook, Operation, caps::CAP_SYS_TIME};

use crate::policy::{Verdict, enforce};

#[inline(always)]
pub fn on_cap_sys_time(ctx: &LsmContext) -> Verdict {
    enforce(
        ctx,
        Operation::Settime,
        Hook::Capable,
        CAP_SYS_TIME as i64,
        |_| true,
    )
}
