//! `reboot` and `kexec`: restarting the machine, and loading a kernel to boot into. reboot(2),
//! kexec_load and kexec_file_load reach no hook of their own, but each checks CAP_SYS_BOOT before
//! it reads its arguments, so the `capable` program judges them at that check by the caller's
//! call number. In a child PID namespace reboot checks the capability in that namespace's owner
//! and kills the namespace's init instead of rebooting: to a policy still a reboot.
use aya_ebpf::programs::LsmContext;
use enforcer_common::{Hook, Operation, caps::CAP_SYS_BOOT, syscalls};

use crate::{
    decide::{Verdict, nearest_policy},
    enforce::enforce,
    task::Syscall,
};

/// The operation is the caller's call's, so its number is read first; only for a caller some
/// policy covers, so that outside every policy a CAP_SYS_BOOT check costs what any other checked
/// capability does. Any other CAP_SYS_BOOT check is allowed: the syscall layer, which sees only
/// the calls, judges the same.
#[inline(always)]
pub fn on_cap_sys_boot(ctx: &LsmContext) -> Verdict {
    if nearest_policy().is_none() {
        return Verdict::Allow;
    }
    let Some(op @ (Operation::Reboot | Operation::Kexec)) =
        syscalls::judged_at_capability(Syscall::current().nr)
    else {
        return Verdict::Allow;
    };
    enforce(ctx, op, Hook::Capable, CAP_SYS_BOOT as i64, |_| true)
}
