//! The decision every hook shares: find the policy of the caller's cgroup (or of its nearest
//! ancestor with one), count the decision, report it, and return a typed verdict.
//!
//! The verdict is computed first and never depends on what happens afterwards: counting and event
//! emission are best effort and cannot turn a denial into an allow.
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_comm,
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_send_signal,
    },
};
use enforcer_common::{
    Action, DETAIL_TEXT_LEN, EVENT_VERSION, Event, Hook, MAX_POLICY_LEVELS, Operation,
};

use crate::maps::{COUNTERS, DROPPED, EVENTS, POLICIES, POLICY_LEVELS};

const EPERM: i32 = 1;
const SIGKILL: u32 = 9;

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

/// The policy that applies to the caller.
struct Decision {
    action: Action,
    policy_cgroup_id: u64,
}

/// Operation-specific part of an event, filled by the hook.
#[derive(Default)]
pub struct Detail {
    pub args: [i64; 4],
}

/// Decides `op` for the current task and reports the decision. `detail` is only called when
/// there is something to report, so hooks read their arguments off the fast path.
#[inline(always)]
pub fn enforce(op: Operation, hook: Hook, detail: impl FnOnce() -> Detail) -> Verdict {
    let Some(decision) = decide(op) else {
        return Verdict::Allow;
    };
    let verdict = match decision.action {
        Action::Allow | Action::Audit => Verdict::Allow,
        Action::Deny | Action::Kill => Verdict::Deny,
    };
    if decision.action == Action::Allow {
        return verdict;
    }
    if decision.action == Action::Kill {
        // SAFETY: helper call with a constant signal number; it only queues the signal.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    count(op, &decision);
    emit(op, hook, &decision, verdict, detail());
    verdict
}

/// Finds the nearest cgroup on the caller's path that holds a policy. Looks only at the depths
/// that hold policies (deepest first), so the cost does not grow with the caller's own depth.
#[inline(always)]
fn decide(op: Operation) -> Option<Decision> {
    let levels = POLICY_LEVELS.get(0)?;
    let count = levels.count as usize;
    for i in 0..MAX_POLICY_LEVELS {
        if i >= count {
            break;
        }
        // SAFETY: plain helper call; returns 0 when the caller is shallower than `level`.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(levels.levels[i] as i32) };
        if id == 0 {
            continue;
        }
        // SAFETY: the value is copied out at once; a concurrent update replaces whole entries.
        if let Some(policy) = unsafe { POLICIES.get(id) } {
            return Some(Decision {
                action: policy.action(op),
                policy_cgroup_id: id,
            });
        }
    }
    None
}

#[inline(always)]
fn count(op: Operation, decision: &Decision) {
    // User space creates the counter entry before the policy and removes it after, so a miss only
    // happens in that window; there is nothing better to do then than not count.
    let Some(counters) = COUNTERS.get_ptr_mut(decision.policy_cgroup_id) else {
        return;
    };
    // SAFETY: per-CPU value of a live entry; programs do not migrate CPUs while running.
    let counters = unsafe { &mut *counters };
    let slot = op as usize;
    match decision.action {
        Action::Audit => counters.audited[slot] += 1,
        Action::Deny => counters.denied[slot] += 1,
        Action::Kill => counters.killed[slot] += 1,
        Action::Allow => {}
    }
}

#[inline(always)]
fn emit(op: Operation, hook: Hook, decision: &Decision, verdict: Verdict, detail: Detail) {
    // reserve takes no flags (anything else makes it fail); the no-wakeup flag goes on submit.
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        if let Some(dropped) = DROPPED.get_ptr_mut(0) {
            // SAFETY: per-CPU slot of an array map, always present.
            unsafe { *dropped += 1 };
        }
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    entry.write(Event {
        version: EVENT_VERSION,
        op: op as u8,
        hook: hook as u8,
        action: decision.action as u8,
        _pad0: [0; 3],
        errno: match verdict {
            Verdict::Allow => 0,
            Verdict::Deny => EPERM,
        },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        _pad1: 0,
        // SAFETY: plain helper calls.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        policy_cgroup_id: decision.policy_cgroup_id,
        comm: bpf_get_current_comm().unwrap_or_default(),
        args: detail.args,
        text: [0; DETAIL_TEXT_LEN],
    });
    // No wakeup per event: a deny storm must not pay for waking the consumer on every call. The
    // consumer drains on a short timer.
    entry.submit(BPF_RB_NO_WAKEUP as u64);
}
