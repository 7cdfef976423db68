//! `enforcer record`: watch what a workload does with the guarded operations, and suggest the
//! strictest policy it would run under unharmed.
//!
//! For the given duration the cgroup gets an audit-everything policy on the syscall layer alone
//! (`attach --layer syscall --audit all`: it works with and without BPF LSM and changes no
//! call's result), and every event of the cgroup's subtree is read through `enforcer tail
//! --json` (which reads the daemon's stream when one runs). Each call is counted as succeeded
//! or as refused, with the layer that refused it. The policy is removed afterwards. A cgroup
//! that already has a policy is refused: recording would replace it, and a policy that denies
//! would hide what the workload tries.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
use enforcer_common::{Action, OPERATIONS, Operation, policy_flags};
use serde_json::Value;

use crate::{ExitError, cgroup, cmd, loader, policy};

#[derive(clap::Args)]
pub struct Args {
    /// cgroup v2 directory (absolute, or relative to the cgroup2 mount) or numeric cgroup id.
    #[arg(long, value_name = "PATH|ID")]
    pub cgroup: String,
    /// How long to watch, e.g. `30s`, `10m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Print the strictest policy file (for `enforcer apply -f`) on stdout; the table goes to
    /// stderr.
    #[arg(long)]
    pub suggest: bool,
}

/// What one operation did during the recording.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub calls: u64,
    pub succeeded: u64,
    /// Refused calls by the layer that refused them (`seccomp`, `capability`, `other`, ...).
    pub refused: BTreeMap<String, u64>,
    /// Calls that failed with another errno (bad arguments and the like).
    pub failed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let target = cgroup::resolve(&args.cgroup)?;
    if let Ok(maps) = loader::open_policy_maps_existing()
        && maps.policies.get(&target.id, 0).is_ok()
    {
        anyhow::bail!(ExitError::bad_cgroup(format!(
            "{} already has a policy, which recording would replace; record a workload in a cgroup without one (`enforcer detach --cgroup {}` first if that is what you want)",
            target.path, target.path
        )));
    }
    let mut audit_all = policy::compile(&[(Action::Audit, Some("all"))], target.level)?;
    audit_all.flags |= policy_flags::SYSCALL_LAYER | policy_flags::SYSCALL_ONLY;
    {
        let lock = loader::lock()?;
        let mut maps = loader::install_maps(&lock)?;
        cmd::attach::set_policy(&mut maps, &target, audit_all)?;
    }
    let recorded = watch(&target, args.duration);
    // Removed whatever happened while watching.
    let removed = {
        let lock = loader::lock()?;
        let mut maps = loader::open_policy_maps_existing()?;
        let removed = cmd::detach::remove_policy(&mut maps, target.id);
        drop(lock);
        removed
    };
    let (usage, dropped) = recorded?;
    removed.context("cannot remove the recording policy")?;

    let table = table(&usage, dropped);
    if args.suggest {
        eprint!("{table}");
        let path = cgroup::root()?.join(target.path.trim_start_matches('/'));
        print!(
            "{}",
            suggest(&path.display().to_string(), args.duration, &usage)
        );
    } else {
        print!("{table}");
    }
    if dropped > 0 {
        eprintln!(
            "enforcer: {dropped} events were lost while recording, so some calls are missing above; record again (with fewer other events on this machine)"
        );
    }
    Ok(())
}

/// Follows the cgroup's events for `duration` through `enforcer tail --json`.
fn watch(target: &cgroup::Cgroup, duration: Duration) -> Result<(BTreeMap<Operation, Usage>, u64)> {
    let exe = std::env::current_exe().context("cannot find the enforcer binary")?;
    let mut tail = Command::new(exe)
        .args(["tail", "--json", "--cgroup", &target.id.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start `enforcer tail`")?;
    let stdout = tail.stdout.take().context("tail has no stdout")?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(mut lines) = sink.lock() {
                lines.push(line);
            }
        }
    });
    eprintln!(
        "enforcer: recording {} for {} (audit of every operation on the syscall layer)",
        target.path,
        humantime::format_duration(duration)
    );
    thread::sleep(duration);
    // The tail drains on a short timer: give it a moment for the last events.
    thread::sleep(Duration::from_millis(300));
    let _ = tail.kill();
    let _ = tail.wait();
    let _ = reader.join();
    let lines = lines.lock().map(|l| l.clone()).unwrap_or_default();
    let values: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    Ok(tally(&values))
}

/// Counts the syscall layer's events per operation; returns the usage and the dropped count.
pub fn tally(events: &[Value]) -> (BTreeMap<Operation, Usage>, u64) {
    let mut usage: BTreeMap<Operation, Usage> = BTreeMap::new();
    let mut dropped = 0;
    for event in events {
        let enforcer = &event["enforcer"];
        if let Some(count) = enforcer["dropped"].as_u64() {
            dropped += count;
            continue;
        }
        if enforcer["source"] != "syscall" {
            continue;
        }
        let Some(op) = enforcer["operation"]
            .as_str()
            .and_then(Operation::from_name)
        else {
            continue;
        };
        let entry = usage.entry(op).or_default();
        entry.calls += 1;
        match (enforcer["errno"].as_i64(), enforcer["refused_by"].as_str()) {
            (Some(0), _) => entry.succeeded += 1,
            (_, Some(layer)) => *entry.refused.entry(layer.to_owned()).or_default() += 1,
            _ => entry.failed += 1,
        }
    }
    (usage, dropped)
}

/// The per-operation table.
pub fn table(usage: &BTreeMap<Operation, Usage>, dropped: u64) -> String {
    let mut out = format!(
        "{:<10} {:>7} {:>10} {:>7}  {}\n",
        "OPERATION", "CALLS", "SUCCEEDED", "FAILED", "REFUSED (BY LAYER)"
    );
    for spec in OPERATIONS {
        let used = usage.get(&spec.op).cloned().unwrap_or_default();
        let refused: Vec<String> = used
            .refused
            .iter()
            .map(|(layer, count)| format!("{count} {layer}"))
            .collect();
        let verdict = if used.succeeded > 0 {
            "denying it would break the workload"
        } else {
            "safe to deny"
        };
        out += &format!(
            "{:<10} {:>7} {:>10} {:>7}  {:<20} {verdict}\n",
            spec.name,
            used.calls,
            used.succeeded,
            used.failed,
            if refused.is_empty() {
                "-".to_owned()
            } else {
                refused.join(", ")
            },
        );
    }
    if dropped > 0 {
        out += &format!("({dropped} events lost)\n");
    }
    out
}

/// The strictest policy file that denies nothing the workload did successfully: every operation
/// it never used successfully is denied (a call another layer refused already fails, so denying
/// it breaks nothing more), the others are audited. `cgroup` is written as given.
pub fn suggest(cgroup: &str, duration: Duration, usage: &BTreeMap<Operation, Usage>) -> String {
    let succeeded = |op: Operation| usage.get(&op).is_some_and(|u| u.succeeded > 0);
    let names = |used: bool| -> Vec<&str> {
        OPERATIONS
            .iter()
            .filter(|spec| succeeded(spec.op) == used)
            .map(|spec| spec.name)
            .collect()
    };
    let (used, unused) = (names(true), names(false));
    let mut out = format!(
        "# enforcer record --suggest: {cgroup} watched for {}; denies every operation the\n# workload never completed, audits the ones it used.\npolicies:\n  - cgroup: {cgroup}\n",
        humantime::format_duration(duration),
    );
    if !unused.is_empty() {
        out += &format!("    deny: [{}]\n", unused.join(", "));
    }
    if !used.is_empty() {
        out += &format!("    audit: [{}]\n", used.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(op: &str, errno: i64, refused_by: Option<&str>) -> Value {
        json!({ "enforcer": {
            "source": "syscall", "operation": op, "errno": errno, "refused_by": refused_by,
        }})
    }

    #[test]
    fn tallies_and_suggests_denying_what_never_succeeded() {
        let events = [
            event("settime", 0, None),
            event("settime", 1, Some("capability")),
            event("keyctl", 1, Some("seccomp")),
            event("mount", 22, None),
            json!({ "enforcer": { "source": "lsm", "operation": "mount", "errno": 0 }}),
            json!({ "enforcer": { "dropped": 2 }}),
        ];
        let (usage, dropped) = tally(&events);
        assert_eq!(dropped, 2);
        let settime = &usage[&Operation::Settime];
        assert_eq!((settime.calls, settime.succeeded), (2, 1));
        assert_eq!(settime.refused["capability"], 1);
        assert_eq!(usage[&Operation::Keyctl].refused["seccomp"], 1);
        assert_eq!(usage[&Operation::Mount].failed, 1);
        let file = suggest("/sys/fs/cgroup/app", Duration::from_secs(5), &usage);
        assert!(file.contains("    deny: [mount, keyctl]\n"), "{file}");
        assert!(file.contains("    audit: [settime]\n"), "{file}");
        // What it prints is a policy file `apply` reads.
        let rules = crate::policy::parse_file("suggested.yaml", &file).expect("valid file");
        assert_eq!(rules.len(), 1);
    }
}
