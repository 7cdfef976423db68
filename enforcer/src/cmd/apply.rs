//! `enforcer apply -f policy.yaml`: make the kernel hold the policies of a file.
//!
//! The whole file is checked first (syntax, unknown keys, operations, cgroups, depth limit); only
//! then does anything change. Policies not in the file stay unless `--prune` is given, as with
//! `kubectl apply`.
use std::path::PathBuf;

use anyhow::Result;

use crate::{
    bpf::Bpf,
    cgroup,
    daemon::control,
    ops::{self, Desired},
    policy,
};

#[derive(clap::Args)]
pub struct Args {
    /// The policy file (YAML; format in the README), or `-` for stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Print what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove policies that the file does not list.
    #[arg(long)]
    pub prune: bool,
}

pub fn run(args: Args, bpf: Bpf) -> Result<()> {
    let desired = validate(&args)?;
    // With a daemon up, it plans and makes the changes (and logs them).
    if control::forward(&control::Request::Apply {
        policies: desired
            .values()
            .map(|(target, policy)| control::Entry {
                cgroup: target.into(),
                policy: (*policy).into(),
            })
            .collect(),
        dry_run: args.dry_run,
        prune: args.prune,
    })? {
        return Ok(());
    }
    let mut out = String::new();
    let result = ops::apply(
        bpf,
        &desired,
        args.dry_run,
        args.prune,
        &mut out,
        &mut Vec::new(),
    );
    print!("{out}");
    result
}

/// Reads and checks the whole file; nothing is touched yet.
pub fn validate(args: &Args) -> Result<Desired> {
    // `-f -` reads the file from stdin (`enforcer record --suggest | enforcer apply -f -`).
    let stdin = args.file.as_os_str() == "-";
    let shown = if stdin {
        "<stdin>".to_owned()
    } else {
        args.file.display().to_string()
    };
    let read = if stdin {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(&args.file)
    };
    let text = read.map_err(|err| policy::PolicyError::File {
        file: shown.clone(),
        message: format!("cannot read it ({err})"),
    })?;
    let mut desired = Desired::new();
    for entry in policy::parse_file(&shown, &text)? {
        let target = cgroup::resolve(&entry.cgroup)?;
        let mut compiled = policy::compile(&entry.rules, target.level)?;
        entry
            .arm
            .unwrap_or_else(|| ops::default_arm(&target))
            .apply(&mut compiled);
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
    Ok(desired)
}
