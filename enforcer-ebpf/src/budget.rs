//! Per-policy event budget: one covered workload that floods audited or denied calls must not
//! fill the single shared ring buffer and turn other tenants' events into drop counts.
//!
//! A token bucket per policy cgroup and CPU (per-CPU, so no two programs ever race on one
//! bucket): [`BURST`] events at once, then one per [`COST_NS`]. An event past the budget is
//! suppressed and counted (in the policy's counters, `SUPPRESSED_SLOT`, exact); the next one
//! that passes carries a summary of how many were before it. Only events are budgeted: verdicts
//! and the decision counters never look at this.
use enforcer_common::{Action, Budget, SUPPRESSED_SLOT};

use crate::maps::{BUDGET, COUNTERS};

/// Time credit one event costs: 1,000 events per second per policy and CPU.
const COST_NS: u64 = 1_000_000;
/// Events a policy may send at once after a quiet period, per CPU.
const BURST: u64 = 512;

/// What was suppressed before an event that passes.
pub struct Suppressed {
    pub count: u64,
    pub since_ns: u64,
}

/// The bench build's switch that keeps the budget from running out.
#[cfg(feature = "bench")]
#[inline(always)]
fn unlimited() -> bool {
    crate::maps::CONFIG
        .get(0)
        .is_some_and(|c| c.flags & enforcer_common::config::BENCH_UNLIMITED_BUDGET != 0)
}

#[cfg(not(feature = "bench"))]
#[inline(always)]
fn unlimited() -> bool {
    false
}

/// Spends one event of `policy`'s budget at `now`: `None` when the event must be suppressed.
#[inline(always)]
pub fn take(policy: u64, now: u64) -> Option<Suppressed> {
    let Some(bucket) = BUDGET.get_ptr_mut(policy) else {
        // First event of this policy on this CPU (or its bucket was evicted): a full bucket. A
        // failed insert leaves the events unbudgeted, never lost.
        // A zero the compiler cannot see: two zero words would become a `memset` call, a byte
        // loop in BPF.
        // SAFETY: a volatile read of a local.
        let zero = unsafe { core::ptr::read_volatile(&0u64) };
        let full = Budget {
            credit_ns: (BURST - 1) * COST_NS,
            last_ns: now,
            suppressed: zero,
            since_ns: zero,
        };
        let _ = BUDGET.insert(policy, full, 0);
        return Some(Suppressed {
            count: 0,
            since_ns: 0,
        });
    };
    // SAFETY: this CPU's value of a live entry; a program does not migrate while it runs.
    let bucket = unsafe { &mut *bucket };
    let credit = bucket
        .credit_ns
        .saturating_add(now.saturating_sub(bucket.last_ns))
        .min(BURST * COST_NS);
    bucket.last_ns = now;
    if credit < COST_NS && !unlimited() {
        bucket.credit_ns = credit;
        if let Some(counters) = COUNTERS.get_ptr_mut(policy) {
            // SAFETY: this CPU's value of a live entry.
            unsafe { (*counters).by_action[Action::Allow as usize][SUPPRESSED_SLOT] += 1 };
        }
        if bucket.suppressed == 0 {
            bucket.since_ns = now;
        }
        bucket.suppressed += 1;
        return None;
    }
    bucket.credit_ns = credit.saturating_sub(COST_NS);
    let suppressed = Suppressed {
        count: bucket.suppressed,
        since_ns: bucket.since_ns,
    };
    bucket.suppressed = 0;
    Some(suppressed)
}
