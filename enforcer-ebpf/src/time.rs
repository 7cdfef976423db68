//! `settime`: changes to the system clock. Every path (settimeofday, clock_settime, stime,
//! adjtimex and clock_adjtime when they modify the clock) checks CAP_SYS_TIME first, and the
//! capability LSM's own `settime` check is that same capability, so the `capable` hook alone sees
//! them all, once each; it judges the checks made inside those calls only.
use aya_ebpf::programs::LsmContext;
use enforcer_common::{Hook, Operation, caps::CAP_SYS_TIME, syscalls};

use crate::{decide::Verdict, enforce::enforce, task::Syscall};

#[inline(always)]
pub fn on_cap_sys_time(ctx: &LsmContext) -> Verdict {
    enforce(
        ctx,
        Operation::Settime,
        Hook::Capable,
        CAP_SYS_TIME as i64,
        is_clock_change,
    )
}

/// A CAP_SYS_TIME check is a clock change when the caller is in one of the clock calls (the
/// kernel checks the capability in them exactly when they change the clock). Others check it
/// too without changing the clock (writing `/proc/PID/timens_offsets` sets a time namespace's
/// offsets), and the syscall layer, which sees only the calls, must judge the same.
#[cfg(not(feature = "upgrade-test-variant"))]
#[inline(always)]
fn is_clock_change(syscall: &Syscall) -> bool {
    syscalls::clock_call(syscall.nr).is_some()
}

/// The upgrade tests' second build (feature `upgrade-test-variant`): one more comparison, never
/// true because no system call has this number, so the `capable` program's instructions and tag
/// differ from the default build's while it decides exactly the same.
#[cfg(feature = "upgrade-test-variant")]
#[inline(always)]
fn is_clock_change(syscall: &Syscall) -> bool {
    const NEVER_A_SYSCALL: i64 = i64::MIN + 0x5eed;
    syscalls::clock_call(syscall.nr).is_some() || syscall.nr == NEVER_A_SYSCALL
}
