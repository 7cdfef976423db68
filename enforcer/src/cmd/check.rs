//! `enforcer check`: can this machine enforce? The checks and the self-test live in
//! [`crate::check`]; this command holds back termination signals while they run, prints each
//! check as a line (or all of them as one JSON document) and turns the outcome into an exit code.
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::{
    bpf::Bpf,
    check::{self, Check},
    error::ExitError,
    signals,
};

#[derive(clap::Args)]
pub struct Args {
    /// One JSON document: `{"ok": bool, "checks": [{"name", "status", "detail", "fix"}]}`.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of the hidden `check-child` subcommand: the self-test's process.
#[derive(clap::Args)]
pub struct ChildArgs {
    /// The throwaway cgroup to join.
    #[arg(long)]
    cgroup: PathBuf,
    /// An empty directory to try mounting a tmpfs on.
    #[arg(long)]
    mount_dir: PathBuf,
    /// Description of the `user` key to try adding.
    #[arg(long)]
    key: String,
}

pub fn run(args: Args, bpf: Bpf) -> Result<()> {
    // The self-test sets a policy and may install the programs: a Ctrl-C, SIGTERM or SIGHUP waits
    // until everything it made is removed again.
    let held = signals::Held::new().context("cannot hold back termination signals")?;
    let report = check::run(bpf, |check| {
        if !args.json {
            println!("{}", line(check));
        }
    });
    if let Some(signal) = held.pending() {
        anyhow::bail!(ExitError::interrupted(
            signal,
            format!("interrupted by {signal}: everything the self-test made is removed again")
        ));
    }

    let failed = report.failed();
    if args.json {
        let checks: Vec<Value> = report.checks.iter().map(json).collect();
        println!("{}", json!({ "ok": failed.is_empty(), "checks": checks }));
    } else if failed.is_empty() {
        println!("this machine can enforce");
    }
    if failed.is_empty() {
        return Ok(());
    }
    let message = format!(
        "this machine cannot enforce ({} failed); each failed check names its fix",
        failed.join(", ")
    );
    Err(if report.privileged() {
        ExitError::cannot_enforce(message)
    } else {
        ExitError::not_privileged(message)
    }
    .into())
}

/// The self-test's process (started by `check` itself).
pub fn child(args: ChildArgs) -> Result<()> {
    check::child::run(&args.cgroup, &args.mount_dir, &args.key)
}

/// One line: status, name, what was found, then the fix unless the finding already ends with it
/// (the loader's messages name their fix at the end).
fn line(check: &Check) -> String {
    let mut line = format!(
        "{:<4}  {:<10}  {}",
        check.status.as_str(),
        check.name.as_str(),
        check.detail
    );
    if let Some(fix) = &check.fix
        && !check.detail.ends_with(fix.as_str())
    {
        line += &format!("; fix: {fix}");
    }
    line
}

fn json(check: &Check) -> Value {
    json!({
        "name": check.name.as_str(),
        "status": check.status.as_str(),
        "detail": check.detail,
        "fix": check.fix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Name;

    #[test]
    fn lines_name_the_fix_once() {
        let check = Check::fail(Name::Lsm, "bpf is missing", "add lsm=x,bpf");
        assert_eq!(
            line(&check),
            "fail  lsm         bpf is missing; fix: add lsm=x,bpf"
        );
        let fix = "run it as root";
        let check = Check::fail(
            Name::SelfTest,
            format!("this needs root; {fix}"),
            fix.to_owned(),
        );
        assert_eq!(
            line(&check),
            "fail  self-test   this needs root; run it as root"
        );
        assert_eq!(json(&check)["fix"], fix);
        assert_eq!(json(&check)["name"], "self-test");
    }
}
