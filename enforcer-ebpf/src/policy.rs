//! The decision every hook shares: find the policy of the caller's cgroup (or of its nearest
//! ancestor with one), count the decision, report it, and return a typed verdict.
//!
//! The verdict is computed first and never depends on what happens afterwards: counting and event
//! emission are best effort and cannot turn a denial into an allow.
use aya_ebpf::programs::LsmContext;
use aya_ebpf::{
    bindings::{BPF_RB_NO_WAKEUP, pt_regs},
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_task_btf,
        bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_str_bytes, bpf_send_signal,
        generated::{self, bpf_task_pt_regs},
    },
};
use aya_log_ebpf::info;
use enforcer_common::{
    Action, COMM_LEN, EVENT_STR_LEN, EVENT_VERSION, Event, Hook, LEVEL_UNUSED, MAX_POLICY_LEVELS,
    Operation, Policy, TS_COMPAT, config, kind, policy_flags, refused_by, source, string_slot,
    syscalls,
};

use crate::layout;
use crate::maps::{CONFIG, COUNTERS, DROPPED, EVENTS, POLICIES, POLICY_INDEX};

const EPERM: i32 = 1;
pub(crate) const SIGKILL: u32 = 9;

/// What a hook returns to the kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    /// The LSM return value: 0 permits, a negative errno refuses.
    #[inline(always)]
    pub fn retval(self) -> i32 {
        match self {
            Self::Allow => 0,
            Self::Deny => -EPERM,
        }
    }
}

/// The system call the current task is in, from its saved user registers.
pub struct Syscall {
    /// x86_64 number (for a 32-bit caller, that of the same call: [`syscalls::ia32::native`]),
    /// -1 when the task is not in a system call or in a 32-bit one the enforcer does not guard.
    pub nr: i64,
    /// The arguments, in the call's order.
    pub args: [u64; 6],
    /// A 32-bit (ia32) system call.
    pub compat: bool,
    /// The current task (a BTF pointer: field loads from it are checked by the verifier).
    task: *const u8,
}

/// The current task, as a BTF pointer.
#[inline(always)]
pub(crate) fn current_task() -> *const u8 {
    // SAFETY: plain helper call.
    unsafe { bpf_get_current_task_btf() }.cast()
}

/// Whether `task` is in a 32-bit (ia32) system call: a 32-bit program, or a 64-bit one using
/// `int $0x80`. Their call numbers mean other calls than the same x86_64 numbers.
#[inline(always)]
pub(crate) fn in_compat_syscall(task: *const u8) -> bool {
    let layout = layout::get();
    // SAFETY: `task` is a BTF task pointer and the offset is its thread_info.status, a u32.
    let status = unsafe { *task.add(layout.task_ti_status as usize).cast::<u32>() };
    status & TS_COMPAT != 0
}

impl Syscall {
    /// A call recorded earlier (the syscall layer's entry record), made by the current task.
    #[inline(always)]
    pub(crate) fn recorded(nr: i64, args: [u64; 6], compat: bool) -> Self {
        Self {
            nr,
            args,
            compat,
            task: current_task(),
        }
    }

    #[inline(always)]
    pub(crate) fn current() -> Self {
        let task = current_task();
        let compat = in_compat_syscall(task);
        // SAFETY: bpf_task_pt_regs returns a BTF-typed pointer to the task's saved user
        // registers; the verifier turns these field loads into fault-safe loads, far cheaper than
        // copying the whole struct with probe_read.
        unsafe {
            let regs = bpf_task_pt_regs(task.cast_mut().cast()) as *const pt_regs;
            let nr = (*regs).orig_rax as i64;
            if compat {
                // The ia32 calling convention: ebx, ecx, edx, esi, edi, ebp.
                const LOW: u64 = 0xffff_ffff;
                Self {
                    task,
                    nr: syscalls::ia32::native(nr),
                    args: [
                        (*regs).rbx & LOW,
                        (*regs).rcx & LOW,
                        (*regs).rdx & LOW,
                        (*regs).rsi & LOW,
                        (*regs).rdi & LOW,
                        (*regs).rbp & LOW,
                    ],
                    compat,
                }
            } else {
                Self {
                    task,
                    // An x32 call (bit 30) is judged as the x86_64 call it makes.
                    nr: syscalls::x32::native(nr),
                    args: [
                        (*regs).rdi,
                        (*regs).rsi,
                        (*regs).rdx,
                        (*regs).r10,
                        (*regs).r8,
                        (*regs).r9,
                    ],
                    compat,
                }
            }
        }
    }
}

/// The policy that applies to the caller.
pub(crate) struct Decision {
    pub(crate) action: Action,
    pub(crate) policy_cgroup_id: u64,
    /// The policy's [`policy_flags`].
    pub(crate) flags: u32,
}

/// How the call turned out, as the event reports it (the syscall layer's block of [`Event`]).
pub(crate) struct Outcome {
    pub(crate) source: u8,
    pub(crate) refused_by: u8,
    pub(crate) errno: i32,
    pub(crate) ret: i64,
}

impl Outcome {
    #[inline(always)]
    pub(crate) fn lsm(verdict: Verdict) -> Self {
        let denied = verdict == Verdict::Deny;
        Self {
            source: source::LSM,
            refused_by: if denied {
                refused_by::ENFORCER
            } else {
                refused_by::NONE
            },
            errno: if denied { EPERM } else { 0 },
            ret: verdict.retval() as i64,
        }
    }
}

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
    // A syscall-layer-only policy is the syscall programs' to act on (#6).
    if decision.action == Action::Allow || decision.flags & policy_flags::SYSCALL_ONLY != 0 {
        return Verdict::Allow;
    }
    // Workload arming: a runtime's setup process is not the workload (never denied, not reported).
    if decision.flags & policy_flags::ARM_EXEC != 0 && crate::arming::current_is_setup() {
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
    // Where the syscall layer watches this caller too, its exit names this enforcer (#6).
    if verdict == Verdict::Deny && decision.flags & policy_flags::SYSCALL_LAYER != 0 {
        crate::syscall::note_lsm_denial();
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

/// Finds the nearest cgroup on the caller's path that holds a policy, and what it says of `op`.
#[inline(always)]
pub(crate) fn decide(op: Operation) -> Option<Decision> {
    nearest_policy().map(|(id, policy)| Decision {
        action: policy.action(op),
        policy_cgroup_id: id,
        flags: policy.flags,
    })
}

/// The nearest cgroup on the caller's path that holds a policy, with that policy. Looks only at
/// the depths that hold policies, so the cost does not grow with the caller's own depth, and for
/// a caller outside every policy it is one ancestor id and one filter bit per such depth: no hash
/// lookup.
#[inline(always)]
pub(crate) fn nearest_policy() -> Option<(u64, &'static Policy)> {
    let index = POLICY_INDEX.get(0)?;
    let count = index.count as usize;
    let mut nearest: Option<(u32, u64, &Policy)> = None;
    for i in 0..MAX_POLICY_LEVELS {
        if i >= count {
            break;
        }
        let slot = &index.slots[i];
        let level = slot.level;
        if level == LEVEL_UNUSED || nearest.is_some_and(|(depth, _, _)| depth >= level) {
            continue;
        }
        // SAFETY: plain helper call; returns 0 when the caller is shallower than `level`.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 || !slot.may_hold(id) {
            continue;
        }
        // SAFETY: the value stays valid for this program run; updates replace whole entries.
        if let Some(policy) = unsafe { POLICIES.get(id) } {
            nearest = Some((level, id, policy));
        }
    }
    nearest.map(|(_, id, policy)| (id, policy))
}

/// The counters' row of `action`, masked to the four rows where the verifier can see it. The byte
/// is read volatile so the compiler keeps the mask: it knows an `Action` is below 4 and would
/// drop it, and when the byte was spilled to the stack before its range check, 6.1's verifier
/// then saw an index up to 255.
#[inline(always)]
fn action_row(action: Action) -> usize {
    // SAFETY: reads the one byte of a live `#[repr(u8)]` value.
    let raw = unsafe { core::ptr::read_volatile((&action as *const Action).cast::<u8>()) };
    raw as usize & 3
}

#[inline(always)]
pub(crate) fn count(op: Operation, decision: &Decision) {
    // User space creates the counter entry before the policy and removes it after, so a miss only
    // happens in that window; there is nothing better to do then than not count.
    let Some(counters) = COUNTERS.get_ptr_mut(decision.policy_cgroup_id) else {
        return;
    };
    // SAFETY: per-CPU value of a live entry; programs do not migrate CPUs while running.
    let counters = unsafe { &mut *counters };
    if let Some(count) = counters
        .by_action
        .get_mut(action_row(decision.action))
        .and_then(|row| row.get_mut(op as usize))
    {
        *count += 1;
    }
}

/// The ring buffer's submit flags for an event, or `None` for no event (benches only).
///
/// No wakeup per event: a deny storm must not pay for waking the consumer on every call; the
/// consumer drains on a short timer.
#[cfg(not(feature = "bench"))]
#[inline(always)]
pub(crate) fn submit_flags(_config: u32) -> Option<u64> {
    Some(BPF_RB_NO_WAKEUP as u64)
}

/// The bench build's switches (`enforcer bench-events`): no event at all, or a wakeup per event.
/// Only the bench object has them, so no process can turn events off on a node.
#[cfg(feature = "bench")]
#[inline(always)]
pub(crate) fn submit_flags(config: u32) -> Option<u64> {
    use aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP;
    if config & enforcer_common::config::BENCH_NO_EVENTS != 0 {
        None
    } else if config & enforcer_common::config::BENCH_WAKEUP_EACH != 0 {
        Some(BPF_RB_FORCE_WAKEUP as u64)
    } else {
        Some(BPF_RB_NO_WAKEUP as u64)
    }
}

/// What an event record is about: its [`kind`], operation byte, hook and hook number.
pub(crate) struct Record {
    pub(crate) kind: u8,
    pub(crate) op: u8,
    pub(crate) hook: Hook,
    pub(crate) hook_arg: i64,
}

/// The operation byte of records that are not about an operation (tamper attempts).
pub(crate) const NO_OPERATION: u8 = u8::MAX;

impl Record {
    #[inline(always)]
    pub(crate) fn violation(op: Operation, hook: Hook, hook_arg: i64) -> Self {
        Self {
            kind: kind::VIOLATION,
            op: op as u8,
            hook,
            hook_arg,
        }
    }
}

/// Reserves an event record, counting a drop when the ring buffer is full.
#[inline(always)]
fn reserve() -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<Event>> {
    // reserve takes no flags (anything else makes it fail); the no-wakeup flag goes on submit.
    let entry = EVENTS.reserve::<Event>(0);
    if entry.is_none()
        && let Some(dropped) = DROPPED.get_ptr_mut(0)
    {
        // SAFETY: per-CPU slot of an array map, always present.
        unsafe { *dropped += 1 };
    }
    entry
}

/// Reports a decision, within its policy's event budget ([`crate::budget`]): past the budget
/// the event is suppressed (the counters still count it), and the next event that passes is
/// preceded by a summary of how many were.
#[inline(always)]
pub(crate) fn emit(
    record: &Record,
    decision: &Decision,
    outcome: &Outcome,
    syscall: &Syscall,
    submit_flags: u64,
) {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(suppressed) = crate::budget::take(decision.policy_cgroup_id, now) else {
        return;
    };
    if suppressed.count > 0 {
        emit_summary(
            record.hook,
            decision,
            syscall,
            &suppressed,
            now,
            submit_flags,
        );
    }
    let Some(mut entry) = reserve() else {
        return;
    };
    // Fields are written in place: the record is too large to build on the 512-byte BPF stack.
    // SAFETY: `entry` is a reservation of size_of::<Event>() bytes, exclusively ours until submit.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(event, record, decision, outcome, syscall, now);
    event.args = syscall.args;
    // NULL arguments are common (settimeofday(NULL, tz)) and a faulting read costs thousands of
    // instructions in the page fault handler, so they are skipped.
    // 32-bit callers pass 32-bit time layouts: their requested time stays unread.
    event.requested_sec = -1;
    let time_arg = if syscall.compat {
        syscalls::NO_ARG
    } else {
        syscalls::time_arg(syscall.nr)
    };
    if let Some(&ptr) = syscall.args.get(time_arg).filter(|&&ptr| ptr != 0) {
        // SAFETY: reads the caller's memory; a fault yields Err and leaves -1.
        if let Ok(sec) = unsafe { bpf_probe_read_user(ptr as *const i64) } {
            event.requested_sec = sec;
        }
    }
    let [source, target, fs_type] = syscalls::string_args(syscall.nr);
    read_string_arg(&mut event.strings[string_slot::SOURCE], syscall, source);
    read_string_arg(&mut event.strings[string_slot::TARGET], syscall, target);
    read_string_arg(&mut event.strings[string_slot::FS_TYPE], syscall, fs_type);
    entry.submit(submit_flags);
}

/// A [`kind::SUMMARY`] record: `hook_arg` events of this policy were suppressed on this CPU
/// from `args[0]` (monotonic ns) until now.
#[inline(always)]
fn emit_summary(
    hook: Hook,
    decision: &Decision,
    syscall: &Syscall,
    suppressed: &crate::budget::Suppressed,
    now: u64,
    submit_flags: u64,
) {
    let Some(mut entry) = reserve() else {
        return;
    };
    // SAFETY: as in `emit`.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    let record = Record {
        kind: kind::SUMMARY,
        op: NO_OPERATION,
        hook,
        hook_arg: suppressed.count as i64,
    };
    let outcome = Outcome {
        source: source::LSM,
        refused_by: refused_by::NONE,
        errno: 0,
        ret: 0,
    };
    fill_header(event, &record, decision, &outcome, syscall, now);
    // One volatile store per word: plain stores of zeros are merged into a `memset` call, a byte
    // loop in BPF that 6.1's verifier walks past its instruction limit.
    let args = [suppressed.since_ns, now, 0, 0, 0, 0];
    for (slot, value) in event.args.iter_mut().zip(args) {
        // SAFETY: a plain store into the reservation.
        unsafe { core::ptr::write_volatile(slot, value) };
    }
    event.requested_sec = -1;
    for slot in &mut event.strings {
        slot[0] = 0;
    }
    entry.submit(submit_flags);
}

/// Everything but the call's arguments, requested time and strings.
#[inline(always)]
fn fill_header(
    event: &mut Event,
    record: &Record,
    decision: &Decision,
    outcome: &Outcome,
    syscall: &Syscall,
    now: u64,
) {
    event.version = EVENT_VERSION;
    event.op = record.op;
    event.hook = record.hook as u8;
    event.action = decision.action as u8;
    event.kind = record.kind;
    event._pad0w = 0;
    event.errno = outcome.errno;
    event._pad1 = 0;
    // The ids and the name are read from the task itself at the offsets user space found in this
    // kernel's BTF. The helpers cost far more (measured on 6.12: bpf_get_current_uid_gid 109
    // instructions, through from_kuid twice; bpf_get_current_comm 162, through strscpy_pad).
    let layout = layout::get();
    let task = syscall.task;
    // SAFETY: `task` is the BTF-typed current task and the offsets are its fields' (pid, tgid:
    // pid_t; cred: a pointer to struct cred, whose uid and gid are u32s).
    unsafe {
        event.pid = *task.add(layout.task_tgid as usize).cast::<u32>();
        event.tid = *task.add(layout.task_pid as usize).cast::<u32>();
        let cred = *task.add(layout.task_cred as usize).cast::<*const u8>();
        event.uid = *cred.add(layout.cred_uid as usize).cast::<u32>();
        event.gid = *cred.add(layout.cred_gid as usize).cast::<u32>();
    }
    event.ktime_ns = now;
    // SAFETY: plain helper call.
    event.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    event.policy_cgroup_id = decision.policy_cgroup_id;
    // Not byte loads: on 6.1 every load from a BTF pointer carries an address check, which makes
    // sixteen of them dearer than the copy helper.
    // SAFETY: copies the task's 16-byte name into the record's `comm`; a failed read zeroes it.
    unsafe {
        generated::bpf_probe_read_kernel(
            event.comm.as_mut_ptr().cast(),
            COMM_LEN as u32,
            task.add(layout.task_comm as usize).cast(),
        )
    };
    event.syscall = syscall.nr;
    event.hook_arg = record.hook_arg;
    event.source = outcome.source;
    event.refused_by = outcome.refused_by;
    event.compat = syscall.compat as u8;
    event._pad2 = 0;
    event._pad2w = 0;
    event.ret = outcome.ret;
}

/// Copies the caller's string argument `arg` (a [`syscalls::NO_ARG`] leaves the slot empty).
#[inline(always)]
fn read_string_arg(slot: &mut [u8; EVENT_STR_LEN], syscall: &Syscall, arg: usize) {
    slot[0] = 0;
    let Some(&ptr) = syscall.args.get(arg).filter(|&&ptr| ptr != 0) else {
        return;
    };
    // SAFETY: reads a NUL-terminated string of the caller's, bounded by the slot.
    if unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, slot) }.is_err() {
        slot[0] = 0;
    }
}
