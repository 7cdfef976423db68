//! One policy record per cgroup, from every policy that selects the pod or container: the kernel
//! holds a single record per cgroup, while operators may write several policies whose selectors
//! overlap. The merge is deterministic (input order does not matter) and says which policies the
//! result owes what to, for `rule.name` in events and for the policies' status.
//!
//! The rules:
//! - **Who decides**: the policies that decided at least one operation's action; a policy
//!   whose every action another overrides is reported as overridden and has no say in the
//!   arming or the layer.
//! - **Actions**, per operation: the strictest wins, kill > deny > audit > allow. An operation no
//!   policy names stays allowed.
//! - **Arming**: `immediate` only when every deciding policy asks for it; when they disagree,
//!   `exec`. The two differ only before a container's first exec, where the processes are the
//!   runtime's (runc or crun setting the container up), not the workload's: exec arming covers
//!   every process the workload runs. Arming the merged record at once would apply the
//!   exec-armed policies' operations to that setup as well (a `deny: mount` breaks every
//!   container start), which the authors of those policies chose to avoid. The policies whose
//!   `immediate` was not honoured are listed ([`Merged::arm_lowered`]) so the status can say so.
//! - **Layer**: the union of what the policies act through. `both` is the LSM hooks plus the
//!   syscall layer, so it covers an `lsm` and a `syscall` policy; `lsm` with `syscall` gives
//!   `both`; the merged record is `lsm` or `syscall` only when every deciding policy asks for
//!   that. (A node without BPF LSM cannot enforce the `both` this gives, but it could not
//!   enforce the `lsm` policy either.)
use std::collections::BTreeMap;

use enforcer_common::{Action, OPERATIONS, Operation, Policy};

use crate::policy::{self, Arm, Layer, PolicyError};

/// A policy that selects the workload, as the merge needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selecting {
    /// The name events and status show (`namespace/name` for a namespaced policy).
    pub name: String,
    /// The policy's action per operation; operations not listed are allowed.
    pub actions: Vec<(Operation, Action)>,
    pub arm: Arm,
    pub layer: Layer,
}

/// The action one operation got, and the policies that asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub op: Operation,
    pub action: Action,
    /// Every policy asking this action for this operation, sorted.
    pub policies: Vec<String>,
}

/// The merged record and what it owes to whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The record to store for the cgroup (arming and layer flags set).
    pub policy: Policy,
    pub arm: Arm,
    pub layer: Layer,
    /// The operations that are not allowed, in table order.
    pub decisions: Vec<Decision>,
    /// The policies the record owes something to: those that decided at least one operation's
    /// action (they alone decide the arming and the layer). Sorted.
    pub contributors: Vec<String>,
    /// The policies that select the workload but whose every action another overrides (or that
    /// allow everything). Sorted.
    pub overridden: Vec<String>,
    /// The policies that asked for `immediate` arming and got `exec`, as others asked for it.
    pub arm_lowered: Vec<String>,
}

impl Merged {
    /// The policies behind an operation's action, for `rule.name` in its events; empty when the
    /// operation is allowed.
    pub fn policies_for(&self, op: Operation) -> &[String] {
        self.decisions
            .iter()
            .find(|decision| decision.op == op)
            .map_or(&[], |decision| decision.policies.as_slice())
    }
}

/// Merges the policies selecting one cgroup at depth `level` (see the module's rules). `None`
/// when nothing is left to enforce: no policy, or only allowed operations; the cgroup then needs
/// no record.
pub fn merge(selecting: &[Selecting], level: u32) -> Result<Option<Merged>, PolicyError> {
    let mut strictest: BTreeMap<Operation, (Action, Vec<String>)> = BTreeMap::new();
    for wanted in selecting {
        for &(op, action) in &wanted.actions {
            if action == Action::Allow {
                continue;
            }
            let entry = strictest.entry(op).or_insert((action, Vec::new()));
            if action > entry.0 {
                *entry = (action, Vec::new());
            }
            if action == entry.0 {
                entry.1.push(wanted.name.clone());
            }
        }
    }
    if strictest.is_empty() {
        return Ok(None);
    }

    let mut rules: BTreeMap<Action, Vec<Operation>> = BTreeMap::new();
    for (&op, (action, _)) in &strictest {
        rules.entry(*action).or_default().push(op);
    }
    let rules: Vec<(Action, Vec<Operation>)> = rules.into_iter().collect();
    let mut compiled = policy::compile(&rules, level)?;

    // Table order, as `policy::describe` lists operations.
    let decisions: Vec<Decision> = OPERATIONS
        .iter()
        .filter_map(|spec| {
            let (action, names) = strictest.get(&spec.op)?;
            Some(Decision {
                op: spec.op,
                action: *action,
                policies: sorted(names.iter().cloned()),
            })
        })
        .collect();
    let contributors = sorted(
        decisions
            .iter()
            .flat_map(|decision| decision.policies.iter().cloned()),
    );
    let overridden = sorted(
        selecting
            .iter()
            .map(|wanted| wanted.name.clone())
            .filter(|name| !contributors.contains(name)),
    );

    // A policy with nothing in the record has no say in how the record is armed or layered.
    let deciding: Vec<&Selecting> = selecting
        .iter()
        .filter(|wanted| contributors.contains(&wanted.name))
        .collect();
    let arm = merged_arm(&deciding);
    let layer = merged_layer(&deciding);
    arm.apply(&mut compiled);
    compiled.flags |= layer.flags();
    let arm_lowered = match arm {
        Arm::Exec => sorted(
            deciding
                .iter()
                .filter(|wanted| wanted.arm == Arm::Immediate)
                .map(|wanted| wanted.name.clone()),
        ),
        Arm::Immediate => Vec::new(),
    };

    Ok(Some(Merged {
        policy: compiled,
        arm,
        layer,
        decisions,
        contributors,
        overridden,
        arm_lowered,
    }))
}

/// `immediate` when every deciding policy asks for it, else `exec`.
fn merged_arm(selecting: &[&Selecting]) -> Arm {
    if selecting.iter().all(|wanted| wanted.arm == Arm::Immediate) {
        Arm::Immediate
    } else {
        Arm::Exec
    }
}

/// What a layer acts through: (LSM hooks, syscall layer).
fn parts(layer: Layer) -> (bool, bool) {
    match layer {
        Layer::Lsm => (true, false),
        Layer::Syscall => (false, true),
        Layer::Both => (true, true),
    }
}

/// The union of the policies' layers.
fn merged_layer(selecting: &[&Selecting]) -> Layer {
    let (lsm, syscall) = selecting
        .iter()
        .map(|wanted| parts(wanted.layer))
        .fold((false, false), |(lsm, sys), (l, s)| (lsm || l, sys || s));
    match (lsm, syscall) {
        (true, true) => Layer::Both,
        (false, true) => Layer::Syscall,
        _ => Layer::Lsm,
    }
}

fn sorted(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests;
