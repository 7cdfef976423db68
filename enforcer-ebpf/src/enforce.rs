//! The pipeline every LSM hook runs: decide, narrow to the calls of the operation, act, count,
//! mark the syscall layer's record, report.
//!
//! The verdict is computed first and never depends on what happens afterwards: counting and event
//! emission are best effort and cannot turn a denial into an allow.
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_send_signal},
    programs::LsmContext,
};
use aya_log_ebpf::info;
use enforcer_common::{Action, Hook, Operation, config, policy_flags};

use crate::{
    arming,
    decide::{SIGKILL, Verdict, count, decide},
    emit::{Outcome, Record, emit, submit_flags},
    inflight,
    maps::CONFIG,
    task::Syscall,
};

/// Decides `op` for the current task and reports the decision.
///
/// `hook_arg` goes into the event (the capability for `capable`). `applies` narrows a shared hook
/// to the calls of this operation; it runs only when a policy asks for something, so callers
/// outside every policy never pay for reading their registers.
#[inline(always)]
pub fn enforce(
    ctx: &LsmContext,
    op: Operation,
    hook: Hook,
    hook_arg: i64,
    applies: impl FnOnce(&Syscall) -> bool,
) -> Verdict {
    let Some(decision) = decide(op) else {
        return Verdict::Allow;
    };
    // A syscall-layer-only policy is the syscall programs' to act on.
    if decision.action == Action::Allow || decision.flags & policy_flags::SYSCALL_ONLY != 0 {
        return Verdict::Allow;
    }
    // Workload arming: a runtime's setup process is not the workload (never denied, not reported).
    if decision.flags & policy_flags::ARM_EXEC != 0 && arming::current_is_setup() {
        return Verdict::Allow;
    }
    let syscall = Syscall::current();
    if !applies(&syscall) {
        return Verdict::Allow;
    }
    let verdict = match decision.action {
        Action::Allow | Action::Audit => Verdict::Allow,
        Action::Deny | Action::Kill => Verdict::Deny,
    };
    if decision.action == Action::Kill {
        // SAFETY: helper call with a constant signal number; it only queues the signal.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    count(op, &decision);
    // Where the syscall layer watches this caller too, its exit names this enforcer.
    if verdict == Verdict::Deny && decision.flags & policy_flags::SYSCALL_LAYER != 0 {
        inflight::note_lsm_denial();
    }
    let flags = CONFIG.get(0).map_or(0, |c| c.flags);
    if let Some(submit) = submit_flags(flags) {
        emit(
            &Record::violation(op, hook, hook_arg),
            &decision,
            &Outcome::lsm(verdict),
            &syscall,
            submit,
        );
    }
    if flags & config::DEBUG_LOG != 0 {
        info!(
            ctx,
            "decision op={} action={} hook={} cgroup={} policy_cgroup={} syscall={}",
            op as u8,
            decision.action as u8,
            hook as u8,
            // SAFETY: plain helper call.
            unsafe { bpf_get_current_cgroup_id() },
            decision.policy_cgroup_id,
            syscall.nr
        );
    }
    verdict
}
