//! The decision every hook and the syscall layer share: find the policy of the caller's cgroup
//! (or of its nearest ancestor with one), say what it wants for an operation, and count it.
//!
//! The verdict never depends on what happens after it: counting and event emission are best
//! effort and cannot turn a denial into an allow.
use enforcer_common::{Action, LEVEL_UNUSED, MAX_POLICY_LEVELS, Operation, Policy};

use crate::maps::{COUNTERS, POLICIES, POLICY_INDEX};

pub(crate) const EPERM: i32 = 1;
/// The signal of [`Action::Kill`].
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

/// The policy that applies to the caller.
pub(crate) struct Decision {
    pub(crate) action: Action,
    pub(crate) policy_cgroup_id: u64,
    /// The policy's [`enforcer_common::policy_flags`].
    pub(crate) flags: u32,
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
        let id = unsafe { aya_ebpf::helpers::bpf_get_current_ancestor_cgroup_id(level as i32) };
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
