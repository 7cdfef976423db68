//! Event emission: one record on the ring buffer per reported decision, within its policy's event
//! budget, with the caller's ids, name, arguments and string arguments written in place.
//!
//! Best effort: a full ring buffer or a spent budget loses the event (counted), never the
//! verdict, which was made before.
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_cgroup_id, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes, generated,
    },
};
use enforcer_common::{
    COMM_LEN, EVENT_STR_LEN, EVENT_VERSION, Event, Hook, Operation, kind, refused_by, source,
    string_slot, syscalls,
};

use crate::{
    decide::{Decision, EPERM, Verdict},
    layout,
    maps::{DROPPED, EVENTS},
    task::Syscall,
};

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
