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
//!
//! The policy attaches the syscall layer for the whole machine, so it must not outlive the
//! command: SIGINT, SIGTERM and SIGHUP are held back from before it is set until it is removed
//! (then the command exits with 128 + the signal's number), and a panic removes it on the way out.
use std::{
    collections::BTreeMap,
    io::{self, BufRead, BufReader, IsTerminal},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use enforcer_common::{Action, OPERATIONS, Operation, policy_flags};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{cgroup, error::ExitError, loader, policy, signals};

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
    // Held from before the policy is set (and before any thread starts, so every thread holds
    // them): from here on, a Ctrl-C, SIGTERM or SIGHUP waits until the policy is removed.
    let held = signals::Held::new().context("cannot hold back termination signals")?;
    if let Ok(maps) = loader::open_policy_maps_existing()
        && maps.policies.get(&target.id, 0).is_ok()
    {
        anyhow::bail!(ExitError::bad_cgroup(format!(
            "{} already has a policy, which recording would replace; record a workload in a cgroup without one (`enforcer detach --cgroup {}` first if that is what you want)",
            target.path, target.path
        )));
    }
    let mut audit_all =
        policy::compile(&[(Action::Audit, policy::every_operation())], target.level)?;
    audit_all.flags |= policy_flags::SYSCALL_LAYER | policy_flags::SYSCALL_ONLY;
    {
        let lock = loader::lock()?;
        let mut maps = loader::install_maps(&lock)?;
        crate::store::set_policy(&mut maps, &target, audit_all)?;
    }
    let recording = Recording {
        id: target.id,
        armed: true,
    };
    let watched = watch(&target, args.duration, &held);
    // Removed whatever happened while watching.
    let removed = recording.remove();
    let Watched {
        usage,
        dropped,
        interrupted,
        elapsed,
    } = watched?;
    removed.context("cannot remove the recording policy")?;

    let table = table(&usage, dropped);
    if let Some(signal) = interrupted {
        // A partial recording suggests nothing: a call the workload makes later would be denied.
        eprint!("{table}");
        anyhow::bail!(ExitError::interrupted(
            signal,
            format!(
                "interrupted by {signal} after {}: the recording policy is removed; the table above shows the calls seen until then (no policy is suggested from a partial recording)",
                humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
            )
        ));
    }
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

/// The recording policy while it is set: removed on drop too, so a panic does not leave it (and
/// the machine-wide syscall layer it attached) behind.
struct Recording {
    id: u64,
    armed: bool,
}

impl Recording {
    fn remove(mut self) -> Result<()> {
        self.armed = false;
        remove_recording(self.id)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.armed {
            let _ = remove_recording(self.id);
        }
    }
}

fn remove_recording(id: u64) -> Result<()> {
    let _lock = loader::lock()?;
    let mut maps = loader::open_policy_maps_existing()?;
    crate::store::remove_policy(&mut maps, id)
}

/// What [`watch`] saw.
struct Watched {
    usage: BTreeMap<Operation, Usage>,
    dropped: u64,
    /// The signal that ended the recording early.
    interrupted: Option<Signal>,
    elapsed: Duration,
}

/// Follows the cgroup's events for `duration` through `enforcer tail --json`, or until one of
/// the `held` signals comes. Shows the time left and the calls seen on stderr when it is a
/// terminal.
fn watch(target: &cgroup::Cgroup, duration: Duration, held: &signals::Held) -> Result<Watched> {
    let exe = std::env::current_exe().context("cannot find the enforcer binary")?;
    let mut tail = Command::new(exe)
        .args(["tail", "--json", "--cgroup", &target.id.to_string()])
        .stdout(Stdio::piped())
        // Its own process group: a terminal's Ctrl-C goes to `record` alone, which stops the
        // tail itself once the last events are read.
        .process_group(0)
        .spawn()
        .context("cannot start `enforcer tail`")?;
    let stdout = tail.stdout.take().context("tail has no stdout")?;
    let events = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicU64::new(0));
    let reader = {
        let (sink, calls) = (Arc::clone(&events), Arc::clone(&calls));
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["enforcer"]["source"] == "syscall" {
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut events) = sink.lock() {
                    events.push(event);
                }
            }
        })
    };
    eprintln!(
        "enforcer: recording {} for {} (audit of every operation on the syscall layer; Ctrl-C stops early and removes the policy)",
        target.path,
        humantime::format_duration(duration)
    );
    let progress = io::stderr().is_terminal();
    let started = Instant::now();
    let mut interrupted = None;
    loop {
        let left = duration.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        if progress {
            eprint!(
                "\r{} left, {} calls seen\x1b[K",
                humantime::format_duration(Duration::from_secs(left.as_secs_f64().ceil() as u64)),
                calls.load(Ordering::Relaxed)
            );
        }
        if let Some(signal) = held.wait(left.min(Duration::from_secs(1))) {
            interrupted = Some(signal);
            break;
        }
    }
    if progress {
        eprint!("\r\x1b[K");
    }
    let elapsed = started.elapsed();
    // The tail drains on a short timer: give it a moment for the last events.
    thread::sleep(Duration::from_millis(300));
    let _ = tail.kill();
    let _ = tail.wait();
    let _ = reader.join();
    let events = events.lock().map(|e| e.clone()).unwrap_or_default();
    let (usage, dropped) = tally(&events);
    Ok(Watched {
        usage,
        dropped,
        interrupted,
        elapsed,
    })
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
        assert!(
            file.contains("    deny: [mount, keyctl, reboot, kexec]\n"),
            "{file}"
        );
        assert!(file.contains("    audit: [settime]\n"), "{file}");
        // What it prints is a policy file `apply` reads.
        let rules = crate::policy::parse_file("suggested.yaml", &file).expect("valid file");
        assert_eq!(rules.len(), 1);
    }
}
