//! `enforcer record`: watch what a workload does with the guarded operations, and suggest the
//! strictest policy it would run under unharmed.
//!
//! For the given duration the cgroup gets an audit-everything policy on the syscall layer alone
//! (`attach --layer syscall --audit all`: it works with and without BPF LSM and changes no
//! call's result), and every event of the cgroup's subtree is followed as `enforcer tail` follows
//! them (the daemon's stream when one runs), in this process. Each call is counted as succeeded
//! or as refused, with the layer that refused it. The policy is removed afterwards. A cgroup
//! that already has a policy is refused: recording would replace it, and a policy that denies
//! would hide what the workload tries.
//!
//! The policy attaches the syscall layer for the whole machine, so it must not outlive the
//! command: SIGINT, SIGTERM and SIGHUP are held back from before it is set until it is removed
//! (then the command exits with 128 + the signal's number), and a panic removes it on the way out.
use std::{
    collections::BTreeMap,
    io::{self, IsTerminal},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use enforcer_common::{Action, OPERATIONS, Operation, policy_flags};
use nix::sys::signal::Signal;

use crate::{
    bpf, cgroup,
    error::ExitError,
    events::{self, Filter, FollowError, Kind, Record, RefusedBy, Sink, Source},
    policy, signals,
};

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
    /// Refused calls by the layer that refused them.
    pub refused: BTreeMap<RefusedBy, u64>,
    /// Calls that failed with another errno (bad arguments and the like).
    pub failed: u64,
}

pub fn run(args: Args, bpf: bpf::Bpf) -> Result<()> {
    let target = cgroup::resolve(&args.cgroup)?;
    // Held from before the policy is set (and before any thread starts, so every thread holds
    // them): from here on, a Ctrl-C, SIGTERM or SIGHUP waits until the policy is removed.
    let held = signals::Held::new().context("cannot hold back termination signals")?;
    if let Ok(maps) = bpf.open_policy_maps()
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
        let lock = bpf.lock()?;
        let mut maps = bpf::install_maps_only(&lock)?;
        crate::store::set_policy(&mut maps, &target, audit_all)?;
    }
    let recording = Recording {
        bpf,
        id: target.id,
        armed: true,
    };
    let watched = watch(bpf, &target, args.duration, &held);
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
    bpf: bpf::Bpf,
    id: u64,
    armed: bool,
}

impl Recording {
    fn remove(mut self) -> Result<()> {
        self.armed = false;
        remove_recording(self.bpf, self.id)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.armed {
            let _ = remove_recording(self.bpf, self.id);
        }
    }
}

fn remove_recording(bpf: bpf::Bpf, id: u64) -> Result<()> {
    let _lock = bpf.lock()?;
    let mut maps = bpf.open_policy_maps()?;
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

/// Follows the cgroup's events for `duration` on a thread of its own, or until one of the `held`
/// signals comes. Shows the time left and the calls seen on stderr when it is a terminal.
fn watch(
    bpf: bpf::Bpf,
    target: &cgroup::Cgroup,
    duration: Duration,
    held: &signals::Held,
) -> Result<Watched> {
    let calls = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follower = {
        let mut tally = Tally::new(Arc::clone(&calls));
        let filter = Filter::subtree(target.path.clone());
        // It inherits the held signals: they stay for the main thread to take.
        thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                let followed = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")
                    .map_err(FollowError::Failed)
                    .and_then(|runtime| {
                        runtime.block_on(events::follow(bpf, Some(filter), &mut tally, async {
                            let _ = stopped.await;
                        }))
                    });
                // Recording goes on without events, as it did when a `tail` child failed: the
                // policy is still removed at the end.
                if let Err(FollowError::Failed(err)) = followed {
                    eprintln!("enforcer: {err:#}");
                }
                tally
            })
            .context("cannot start the event reader")?
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
    // The reader drains on a short timer: give it a moment for the last events.
    thread::sleep(Duration::from_millis(300));
    let _ = stop.send(());
    let tally = follower
        .join()
        .map_err(|_| anyhow::anyhow!("the event reader failed"))?;
    Ok(Watched {
        usage: tally.usage,
        dropped: tally.dropped,
        interrupted,
        elapsed,
    })
}

/// Counts the syscall layer's events per operation, and the events lost.
struct Tally {
    usage: BTreeMap<Operation, Usage>,
    dropped: u64,
    /// The syscall layer's events seen so far, for the progress line.
    calls: Arc<AtomicU64>,
}

impl Tally {
    fn new(calls: Arc<AtomicU64>) -> Self {
        Self {
            usage: BTreeMap::new(),
            dropped: 0,
            calls,
        }
    }

    fn add(&mut self, record: &Record) {
        if record.source != Source::Syscall {
            return;
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let (Kind::Violation, Some(op)) = (record.kind, record.operation) else {
            return;
        };
        let entry = self.usage.entry(op).or_default();
        entry.calls += 1;
        match (record.raw.errno, record.refused_by) {
            (0, _) => entry.succeeded += 1,
            (_, Some(layer)) => *entry.refused.entry(layer).or_default() += 1,
            _ => entry.failed += 1,
        }
    }
}

impl Sink for Tally {
    type Error = FollowError;

    fn event(&mut self, record: &Record) -> Result<(), FollowError> {
        self.add(record);
        Ok(())
    }

    fn dropped(&mut self, count: u64) -> Result<(), FollowError> {
        self.dropped += count;
        Ok(())
    }

    fn drained(&mut self, _tick: bool) -> Result<(), FollowError> {
        Ok(())
    }
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
            .map(|(layer, count)| format!("{count} {}", layer.name()))
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
    use enforcer_common::{Event, Hook, refused_by, source};

    use super::*;
    use crate::events::tests::sample;

    fn event(op: Operation, errno: i32, refused: u8) -> Event {
        let mut event = sample();
        event.source = source::SYSCALL;
        event.hook = Hook::SysExit as u8;
        event.op = op as u8;
        event.errno = errno;
        event.refused_by = refused;
        event
    }

    #[test]
    fn tallies_and_suggests_denying_what_never_succeeded() {
        let mut lsm = event(Operation::Mount, 0, refused_by::NONE);
        lsm.source = source::LSM;
        let mut tally = Tally::new(Arc::default());
        for event in [
            event(Operation::Settime, 0, refused_by::NONE),
            event(Operation::Settime, 1, refused_by::CAPABILITY),
            event(Operation::Keyctl, 1, refused_by::SECCOMP),
            event(Operation::Mount, 22, refused_by::NONE),
            lsm,
        ] {
            tally.event(&event.into()).unwrap();
        }
        tally.dropped(2).unwrap();
        let (usage, dropped) = (tally.usage, tally.dropped);
        assert_eq!(dropped, 2);
        let settime = &usage[&Operation::Settime];
        assert_eq!((settime.calls, settime.succeeded), (2, 1));
        assert_eq!(settime.refused[&RefusedBy::Capability], 1);
        assert_eq!(usage[&Operation::Keyctl].refused[&RefusedBy::Seccomp], 1);
        assert_eq!(usage[&Operation::Mount].failed, 1);
        assert_eq!(usage[&Operation::Mount].calls, 1);
        let shown = table(&usage, dropped);
        assert!(shown.contains("1 capability"), "{shown}");
        let file = suggest("/sys/fs/cgroup/app", Duration::from_secs(5), &usage);
        assert!(
            file.contains("    deny: [mount, keyctl, reboot, kexec]\n"),
            "{file}"
        );
        assert!(file.contains("    audit: [settime]\n"), "{file}");
        // What it prints is a policy file `apply` reads.
        let rules = policy::parse_file("suggested.yaml", &file).expect("valid file");
        assert_eq!(rules.len(), 1);
    }
}
