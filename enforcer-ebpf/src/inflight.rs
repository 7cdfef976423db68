//! The syscall layer's per-thread record (`SYS_INFLIGHT`), as the LSM programs touch it: they
//! only mark a call they denied, so the layer's exit event names this enforcer as the refuser.
use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::maps::SYS_INFLIGHT;

/// Called by the LSM programs when they deny a call of a task whose policy wants the syscall
/// layer: marks the thread's record so the exit names this enforcer as the refuser.
#[inline(always)]
pub(crate) fn note_lsm_denial() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(record) = SYS_INFLIGHT.get_ptr_mut(tid) {
        // SAFETY: a live entry of this thread's; only this thread writes it.
        unsafe { (*record).lsm_denied = 1 };
    }
}
