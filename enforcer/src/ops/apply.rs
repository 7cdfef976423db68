//! `apply`'s plan and its execution: the diff between a validated set of policies and the
//! kernel's, made one change at a time under the state lock.
use std::collections::BTreeMap;

use anyhow::Result;
use enforcer_common::Policy;

use crate::{
    bpf,
    cgroup::{self, PathCache},
    policy, store,
};

/// One line of the plan.
enum Change {
    Add(Policy),
    Replace { from: Policy, to: Policy },
    Keep(Policy),
    Remove(Policy),
}

/// The validated file: per cgroup id, the cgroup and its compiled policy.
pub type Desired = BTreeMap<u64, (cgroup::Cgroup, Policy)>;

/// A policy change that `apply` made, for the daemon's log.
pub enum Made {
    Attached {
        target: cgroup::Cgroup,
        policy: Policy,
        previous: Option<Policy>,
    },
    Detached {
        id: u64,
        path: String,
        policy: Policy,
    },
}

/// Plans against the kernel's state under the state lock, writes the diff to `out`, and (unless
/// `dry_run`) makes the changes, each added to `made` once done. On an error, `out` and `made` hold the changes made before it (none when
/// the programs cannot be installed).
pub fn apply(
    bpf: bpf::Bpf,
    desired: &Desired,
    dry_run: bool,
    prune: bool,
    out: &mut String,
    made: &mut Vec<Made>,
) -> Result<()> {
    let lock = bpf.lock()?;
    let current: BTreeMap<u64, Policy> = match bpf.open_policy_maps() {
        Ok(maps) => maps.policies()?.into_iter().collect(),
        Err(bpf::LoaderError::NotInstalled(_)) => BTreeMap::new(),
        Err(err) => return Err(err.into()),
    };
    let plan = plan(desired, &current, prune);
    let mut paths = PathCache::default();
    let mut lines = BTreeMap::new();
    let mut shown_paths = BTreeMap::new();
    for (id, change) in &plan {
        let path = desired
            .get(id)
            .map_or_else(|| paths.path(*id), |(target, _)| target.path.clone());
        let line = match change {
            Change::Add(p) => format!("+ {path} (id {id}): {}", policy::summary(p)),
            Change::Replace { from, to } => format!(
                "~ {path} (id {id}): {} -> {}",
                policy::summary(from),
                policy::summary(to)
            ),
            Change::Keep(p) => format!("= {path} (id {id}): {}", policy::summary(p)),
            Change::Remove(p) => format!("- {path} (id {id}): {}", policy::summary(p)),
        };
        lines.insert(*id, line);
        shown_paths.insert(*id, path);
    }
    if dry_run {
        for line in lines.values() {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("dry run: nothing changed\n");
        return Ok(());
    }

    // The depth limit is checked for the final set before the first write. Each line goes to
    // `out` once its change is made, so a failure (the install refused, say) never shows a
    // change that was not made.
    let mut maps = bpf::install_programs(&lock)?;
    let final_set: Vec<(u64, u32)> = plan
        .iter()
        .filter_map(|(id, change)| match change {
            Change::Keep(p) | Change::Add(p) | Change::Replace { to: p, .. } => {
                Some((*id, p.level))
            }
            Change::Remove(_) => None,
        })
        .collect();
    policy::index_updates(&maps.current_index()?, &final_set)?;
    for (id, change) in &plan {
        match change {
            Change::Add(_) | Change::Replace { .. } => {
                let (target, new_policy) = &desired[id];
                store::set_policy(&mut maps, target, *new_policy)?;
                made.push(Made::Attached {
                    target: target.clone(),
                    policy: *new_policy,
                    previous: match change {
                        Change::Replace { from, .. } => Some(*from),
                        _ => None,
                    },
                });
            }
            Change::Remove(removed) => {
                store::remove_policy(&mut maps, *id)?;
                made.push(Made::Detached {
                    id: *id,
                    path: shown_paths.remove(id).unwrap_or_default(),
                    policy: *removed,
                });
            }
            Change::Keep(_) => {}
        }
        out.push_str(&lines[id]);
        out.push('\n');
    }
    drop(lock);
    let changed = plan
        .values()
        .filter(|change| !matches!(change, Change::Keep(_)))
        .count();
    out.push_str(&format!("applied: {changed} changed\n"));
    Ok(())
}

fn plan(desired: &Desired, current: &BTreeMap<u64, Policy>, prune: bool) -> BTreeMap<u64, Change> {
    let mut plan = BTreeMap::new();
    for (id, (_, want)) in desired {
        let change = match current.get(id) {
            None => Change::Add(*want),
            Some(have) if have == want => Change::Keep(*want),
            Some(have) => Change::Replace {
                from: *have,
                to: *want,
            },
        };
        plan.insert(*id, change);
    }
    if prune {
        for (id, have) in current {
            plan.entry(*id).or_insert(Change::Remove(*have));
        }
    }
    plan
}
