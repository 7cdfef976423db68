//! `capable`: the capability check every privileged path passes. It guards the calls that have
//! no dedicated hook: clock changes (CAP_SYS_TIME: settimeofday, clock_settime, adjtimex and
//! clock_adjtime when they modify the clock), the new mount API (CAP_SYS_ADMIN), reboot and
//! kexec (CAP_SYS_BOOT).
use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::{
    Operation,
    caps::{CAP_SYS_ADMIN, CAP_SYS_BOOT, CAP_SYS_TIME},
};

use crate::{boot, decide::Verdict, mount, time};

// The capabilities dispatched on below are the families' own, as their `operations!` rows say.
const _: () = assert!(matches!(
    Operation::Settime.capability(),
    Some(CAP_SYS_TIME)
));
const _: () = assert!(matches!(Operation::Mount.capability(), Some(CAP_SYS_ADMIN)));
const _: () = assert!(matches!(Operation::Reboot.capability(), Some(CAP_SYS_BOOT)));
const _: () = assert!(matches!(Operation::Kexec.capability(), Some(CAP_SYS_BOOT)));

/// `capable(const struct cred *cred, struct user_namespace *ns, int cap, unsigned int opts)`.
/// Runs on every capability check in the system, so anything but the capabilities above returns
/// at once.
#[lsm(hook = "capable")]
pub fn capable(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let cap: i32 = ctx.arg(2);
    match cap {
        CAP_SYS_TIME => time::on_cap_sys_time(&ctx),
        CAP_SYS_ADMIN => mount::on_cap_sys_admin(&ctx),
        CAP_SYS_BOOT => boot::on_cap_sys_boot(&ctx),
        _ => Verdict::Allow,
    }
    .retval()
}
