//! What `attach`, `detach`, `apply` and `list` do, as data in and data out: the CLI's direct path
//! and the daemon (for a forwarded request) run the same functions, under the state lock, and
//! print what they return.
use anyhow::Result;
use enforcer_common::Policy;

use crate::{
    bpf::{self, Bpf},
    cgroup, policy,
    policy::Layer,
    store,
};

mod apply;
mod list;

pub use apply::{Desired, Made, apply};
pub use list::list;

/// `exec` for a cgroup that is or holds containers, else `immediate`.
pub fn default_arm(target: &cgroup::Cgroup) -> policy::Arm {
    if crate::workload::holds_containers(target) {
        policy::Arm::Exec
    } else {
        policy::Arm::Immediate
    }
}

/// Sets the validated `new_policy` on `target` under the state lock, installing the programs on
/// first use; returns the policy it replaced.
pub fn attach(bpf: Bpf, target: &cgroup::Cgroup, new_policy: Policy) -> Result<Option<Policy>> {
    let lock = bpf.lock()?;
    // A syscall-only policy needs no LSM program, so it works where BPF LSM is refused.
    let mut maps = if Layer::of(&new_policy) == Layer::Syscall {
        bpf::install_maps_only(&lock)?
    } else {
        bpf::install_programs(&lock)?
    };
    let previous = maps.policies.get(&target.id, 0).ok();
    store::set_policy(&mut maps, target, new_policy)?;
    drop(lock);
    Ok(previous)
}

/// What `attach` prints once the policy is set.
pub fn attach_report(target: &cgroup::Cgroup, new_policy: &Policy) -> String {
    let summary: Vec<String> = policy::describe(new_policy)
        .into_iter()
        .map(|(op, action)| format!("{}={}", op.name(), action.name()))
        .collect();
    let layer = match Layer::of(new_policy) {
        Layer::Lsm => String::new(),
        layer => format!(" layer={}", layer.name()),
    };
    format!(
        "attached {} (id {}): {} arm={}{layer}\n",
        target.path,
        target.id,
        summary.join(" "),
        policy::Arm::of(new_policy).name()
    )
}

/// Removes the policy of cgroup `id` (`shown` names it in messages) under the state lock; returns
/// the policy removed.
pub fn detach(bpf: Bpf, id: u64, shown: &str) -> Result<Policy> {
    let lock = bpf.lock()?;
    let mut maps = bpf.open_policy_maps()?;
    let Ok(removed) = maps.policies.get(&id, 0) else {
        anyhow::bail!(crate::error::ExitError::no_policy(shown));
    };
    store::remove_policy(&mut maps, id)?;
    drop(lock);
    Ok(removed)
}

/// What `detach` prints once the policy is gone.
pub fn detach_report(shown: &str) -> String {
    format!("detached {shown}\n")
}
