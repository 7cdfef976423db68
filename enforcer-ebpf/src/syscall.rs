//! The syscall layer: raw tracepoints at system call entry and exit, for policies that ask
//! for it ([`policy_flags::SYSCALL_LAYER`]). User space attaches these two programs only while
//! such a policy exists.
//!
//! - `sys_enter` filters on the guarded call numbers first (every other call returns after one
//!   comparison chain), then on the caller's policy (the shared [`decide`]). For a watched caller
//!   it records the call (number, arguments, decision) per thread, and for `kill` queues SIGKILL,
//!   which lands when the call returns to user space: the call itself runs (see the README).
//! - `sys_exit` reads the call number from the saved registers, and for a guarded call ends the
//!   thread's record: one event with the return value, and when that is EPERM/EACCES, who refused
//!   it. A call refused by seccomp never reaches `sys_enter` (seccomp runs before the tracepoint)
//!   but does reach `sys_exit`, so an EPERM exit without a record from a task in seccomp filter
//!   mode is seccomp's.
//!
//! Deny is impossible here: a tracepoint cannot change a call's result. Verdicts of the LSM
//! programs never depend on anything in this module.
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_user, bpf_send_signal,
        generated::bpf_task_pt_regs,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use enforcer_common::{
    Action, Hook, Inflight, Operation, policy_flags, refused_by, source,
    syscalls::{self, ClockCall},
};

use crate::{
    decide::{Decision, SIGKILL, count, decide},
    emit::{Outcome, Record, emit, submit_flags},
    layout,
    maps::{CONFIG, SYS_INFLIGHT},
    task::{Syscall, current_task, in_compat_syscall},
};

const EPERM: i64 = 1;
const EACCES: i64 = 13;
/// `task_struct.seccomp.mode` of a task with a seccomp filter.
const SECCOMP_MODE_FILTER: i32 = 2;

/// `sys_enter(struct pt_regs *regs, long id)`.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let nr: i64 = ctx.arg(1);
    if let Some((nr, op)) = guarded(nr) {
        on_enter(nr, op);
    }
    0
}

/// The x86_64 number and the operation of a guarded call numbered `raw` by the caller, which may
/// be in a 32-bit (ia32) call (there 164 is setresuid, not settimeofday, and settimeofday is 79)
/// or an x32 call (bit 30 set). Only numbers guarded in some table pay for more than the first
/// check.
#[inline(always)]
fn guarded(raw: i64) -> Option<(i64, Operation)> {
    if syscalls::operation(raw).is_none() && syscalls::ia32::native(raw) < 0 {
        return None;
    }
    let nr = syscalls::native(raw, in_compat_syscall(current_task()));
    Some((nr, syscalls::operation(nr)?))
}

/// Whether a clock call changes the clock, by the kernel's own order of checks (see
/// [`syscalls::clock_call`]): the `capable` program sees exactly the calls that reach the
/// capability check, so both layers judge every call the same way. Arguments the kernel copies
/// in before that check must be readable (a fault fails the call with EFAULT first), and a
/// `struct timex` must ask for a change.
#[inline(always)]
fn changes_clock(syscall: &Syscall) -> bool {
    let readable = |arg: u64| {
        // SAFETY: reads the caller's memory; a fault yields Err.
        unsafe { bpf_probe_read_user(arg as *const u64) }.is_ok()
    };
    let modes = |arg: u64| {
        // SAFETY: as above.
        unsafe { bpf_probe_read_user(arg as *const u32) }.is_ok_and(syscalls::timex_changes_clock)
    };
    let [a0, a1, ..] = syscall.args;
    match syscalls::clock_call(syscall.nr) {
        Some(ClockCall::Always) => (a0 == 0 || readable(a0)) && (a1 == 0 || readable(a1)),
        Some(ClockCall::Settime) => a0 == syscalls::CLOCK_REALTIME && readable(a1),
        Some(ClockCall::Adjtimex) => modes(a0),
        Some(ClockCall::ClockAdjtime) => a0 == syscalls::CLOCK_REALTIME && modes(a1),
        None => false,
    }
}

#[inline(always)]
fn on_enter(nr: i64, op: Operation) {
    let Some(decision) = decide(op) else {
        return;
    };
    if decision.flags & policy_flags::SYSCALL_LAYER == 0 {
        return;
    }
    // A runtime's setup process under an arming policy is not the workload: no record, no kill.
    if decision.flags & policy_flags::ARM_EXEC != 0 && crate::arming::current_is_setup() {
        return;
    }
    let syscall = Syscall::current();
    if op == Operation::Settime && !changes_clock(&syscall) {
        return;
    }
    let record = Inflight {
        nr,
        args: syscall.args,
        compat: syscall.compat as u8,
        policy_cgroup_id: decision.policy_cgroup_id,
        flags: decision.flags,
        op: op as u8,
        action: decision.action as u8,
        lsm_denied: 0,
    };
    let tid = bpf_get_current_pid_tgid() as u32;
    // Best effort: without the record the exit reports nothing (or, for EPERM, "other").
    let _ = SYS_INFLIGHT.insert(tid, record, 0);
    if decision.action == Action::Kill {
        // SAFETY: helper call with a constant signal number; it only queues the signal.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    // With LSM programs also acting on the policy, they count; a syscall-only policy counts here.
    if decision.action != Action::Allow && decision.flags & policy_flags::SYSCALL_ONLY != 0 {
        count(op, &decision);
    }
}

/// `sys_exit(struct pt_regs *regs, long ret)`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    // The call number from the task's saved registers through their BTF type: a plain load the
    // verifier checks, where a probe_read of the tracepoint's untyped `regs` costs a helper's
    // fault-safe copy on every system call of the machine.
    // SAFETY: bpf_task_pt_regs of the current task returns its saved user registers, typed.
    let nr = unsafe {
        let regs = bpf_task_pt_regs(current_task().cast_mut().cast()) as *const pt_regs;
        (*regs).orig_rax
    };
    if let Some((nr, op)) = guarded(nr as i64) {
        let ret: i64 = ctx.arg(1);
        on_exit(nr, op, ret);
    }
    0
}

#[inline(always)]
fn on_exit(nr: i64, op: Operation, ret: i64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let refused = ret == -EPERM || ret == -EACCES;
    // SAFETY: copied out at once; the entry is this thread's and only this thread removes it.
    let record = unsafe { SYS_INFLIGHT.get(tid) }.copied();
    let (decision, syscall, by) = match record {
        Some(record) if record.nr == nr => {
            let _ = SYS_INFLIGHT.remove(tid);
            // The enforcer's own denial counts whatever errno the kernel made of it (the keys
            // code turns a refused lookup into ENOKEY).
            let by = if record.lsm_denied != 0 && ret < 0 {
                refused_by::ENFORCER
            } else if !refused {
                refused_by::NONE
            } else if lacks_capability(op) {
                refused_by::CAPABILITY
            } else {
                refused_by::OTHER
            };
            let action = Action::from_u8(record.action).unwrap_or(Action::Allow);
            if action == Action::Allow && by == refused_by::NONE {
                return;
            }
            let decision = Decision {
                action,
                policy_cgroup_id: record.policy_cgroup_id,
                flags: record.flags,
            };
            let syscall = Syscall::recorded(nr, record.args, record.compat != 0);
            (decision, syscall, by)
        }
        _ => {
            // No record: the call never reached sys_enter (seccomp refused it, or the layer was
            // attached while the call ran). Only a refusal is worth a report.
            if !refused {
                return;
            }
            let Some(decision) = decide(op) else {
                return;
            };
            if decision.flags & policy_flags::SYSCALL_LAYER == 0 {
                return;
            }
            let by = if seccomp_filtered() {
                refused_by::SECCOMP
            } else {
                refused_by::OTHER
            };
            (decision, Syscall::current(), by)
        }
    };
    let Some(submit) = submit_flags(CONFIG.get(0).map_or(0, |c| c.flags)) else {
        return;
    };
    let outcome = Outcome {
        source: source::SYSCALL,
        refused_by: by,
        errno: if (-4095..0).contains(&ret) {
            -ret as i32
        } else {
            0
        },
        ret,
    };
    emit(
        &Record::violation(op, Hook::SysExit, 0),
        &decision,
        &outcome,
        &syscall,
        submit,
    );
}

/// The current task runs under a seccomp filter.
#[inline(always)]
fn seccomp_filtered() -> bool {
    let layout = layout::get();
    // SAFETY: plain helper call; the task pointer is only used for checked kernel reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: `task` is the current task_struct and the offset is its seccomp.mode (an int).
    let mode = unsafe { layout::read_kernel::<i32>(task, layout.task_seccomp_mode) };
    mode == Some(SECCOMP_MODE_FILTER)
}

/// The current task's effective capabilities lack the one `op`'s calls check first.
#[inline(always)]
fn lacks_capability(op: Operation) -> bool {
    let Some(cap) = op.capability() else {
        return false;
    };
    let layout = layout::get();
    // SAFETY: plain helper call; the task pointer is only used for checked kernel reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: task_struct.cred is a `const struct cred *`.
    let Some(cred) = (unsafe { layout::read_kernel::<u64>(task, layout.task_cred) }) else {
        return false;
    };
    if cred == 0 {
        return false;
    }
    // SAFETY: cred.cap_effective is 8 bytes with capability n at bit n on every kernel.
    match unsafe { layout::read_kernel::<u64>(cred as *const u8, layout.cred_cap_effective) } {
        Some(effective) => effective & (1u64 << cap) == 0,
        None => false,
    }
}
