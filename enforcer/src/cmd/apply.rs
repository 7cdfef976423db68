//! `enforcer apply -f policy.yaml`: make the kernel hold the policies of a file.
//!
//! The whole file is checked first (syntax, unknown keys, operations, cgroups, depth limit); only
//! then does anything change. Policies not in the file stay unless `--prune` is given, as with
//! `kubectl apply`.
use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Result;
use enforcer_common::Policy;

use crate::{
    cgroup::{self, PathCache},
    cmd::{attach, detach},
    loader, policy,
};

#[derive(clap::Args)]
pub struct Args {
    /// The policy file (YAML; format in the README).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Print what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove policies that the file does not list.
    #[arg(long)]
    pub prune: bool,
}

/// One line of the plan.
enum Change {
    Add(Policy),
    Replace { from: Policy, to: Policy },
    Keep(Policy),
    Remove(Policy),
}

pub fn run(args: Args) -> Result<()> {
    let shown = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).map_err(|err| policy::PolicyError::File {
        file: shown.clone(),
        message: format!("cannot read it ({err})"),
    })?;
    let mut desired: BTreeMap<u64, (cgroup::Cgroup, Policy)> = BTreeMap::new();
    for entry in policy::parse_file(&shown, &text)? {
        let target = cgroup::resolve(&entry.cgroup)?;
        let compiled = policy::compile(&entry.borrowed(), target.level)?;
        if desired
            .insert(target.id, (target.clone(), compiled))
            .is_some()
        {
            return Err(policy::PolicyError::Duplicate {
                file: shown,
                cgroup: target.path,
            }
            .into());
        }
    }

    let lock = loader::lock()?;
    let current: BTreeMap<u64, Policy> = match loader::open_policy_maps_existing() {
        Ok(maps) => maps.policies()?.into_iter().collect(),
        Err(loader::LoaderError::NotInstalled(_)) => BTreeMap::new(),
        Err(err) => return Err(err.into()),
    };
    let plan = plan(&desired, &current, args.prune);
    let mut paths = PathCache::default();
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
        println!("{line}");
    }
    if args.dry_run {
        println!("dry run: nothing changed");
        return Ok(());
    }

    // The depth limit is checked for the final set before the first write.
    let mut maps = loader::install(&lock)?;
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
                attach::set_policy(&mut maps, target, *new_policy)?;
            }
            Change::Remove(_) => detach::remove_policy(&mut maps, *id)?,
            Change::Keep(_) => {}
        }
    }
    let changed = plan
        .values()
        .filter(|change| !matches!(change, Change::Keep(_)))
        .count();
    println!("applied: {changed} changed");
    Ok(())
}

fn plan(
    desired: &BTreeMap<u64, (cgroup::Cgroup, Policy)>,
    current: &BTreeMap<u64, Policy>,
    prune: bool,
) -> BTreeMap<u64, Change> {
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
