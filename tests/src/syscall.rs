//! The syscall layer in the VM, with BPF LSM active: attribution of the enforcer's own LSM
//! denials, seccomp and capability attribution on the VM kernels, and `record --suggest` applied
//! to the workload it recorded. The host runs the rest natively (tests/tests/host_syscall.rs).
use std::{
    fs,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use serde_json::Value;

use crate::{
    harness::{Cgroup, Scratch, Tail, counters, enforcer_bin, enforcer_ok, probe},
    matrix::EPERM,
};

const ENOKEY: i64 = 126;

/// settimeofday(NULL, NULL) as a raw call: reaches every clock check, changes nothing.
const SETTIME_NULL: &[&str] = &["raw", "164", "0", "0"];
const CAP_SYS_TIME: &str = "25";

/// The events of one probe run, after the tail drained.
fn events_of(tail: &Tail, pid: u64) -> Vec<Value> {
    tail.settled_events_of(pid)
}

fn by_source<'a>(events: &'a [Value], source: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["enforcer"]["source"] == source)
        .collect()
}

#[test]
fn an_lsm_denial_is_attributed_to_the_enforcer_at_both_layers() {
    let cgroup = Cgroup::new("sys-lsm");
    enforcer_ok(&[
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--layer",
        "both",
        "--deny",
        "settime",
    ]);
    let tail = Tail::start(&[]);
    let refused = probe(Some(&cgroup), SETTIME_NULL);
    assert_eq!(refused.errno(), EPERM, "{refused:?}");
    let events = events_of(&tail, refused.pid());
    let lsm = by_source(&events, "lsm");
    let syscall = by_source(&events, "syscall");
    assert_eq!((lsm.len(), syscall.len()), (1, 1), "{events:?}");
    assert_eq!(lsm[0]["enforcer"]["refused_by"], "enforcer");
    assert_eq!(lsm[0]["enforcer"]["hook"], "capable");
    let exit = &syscall[0]["enforcer"];
    assert_eq!(exit["refused_by"], "enforcer", "{exit}");
    assert_eq!(exit["hook"], "sys_exit");
    assert_eq!(exit["action"], "deny");
    assert_eq!(exit["syscall"]["ret"], -EPERM);
    // The LSM programs count; the syscall layer does not count the same call again.
    assert_eq!(counters(&cgroup, "settime"), (0, 1, 0));

    // A denial the kernel reports with another errno (the keys code: ENOKEY) is still this
    // enforcer's.
    enforcer_ok(&[
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--layer",
        "both",
        "--deny",
        "keyctl",
    ]);
    let refused = probe(Some(&cgroup), &["add-key", "sys-lsm-key", "x"]);
    assert_eq!(refused.errno(), ENOKEY, "{refused:?}");
    let events = events_of(&tail, refused.pid());
    let syscall = by_source(&events, "syscall");
    assert_eq!(syscall.len(), 1, "{events:?}");
    assert_eq!(
        syscall[0]["enforcer"]["refused_by"], "enforcer",
        "{events:?}"
    );
    assert_eq!(syscall[0]["enforcer"]["syscall"]["ret"], -ENOKEY);
}

#[test]
fn seccomp_and_capability_refusals_are_attributed_in_the_vm() {
    let cgroup = Cgroup::new("sys-attr");
    enforcer_ok(&[
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--layer",
        "both",
        "--audit",
        "settime",
    ]);
    let tail = Tail::start(&[]);
    for (setup, layer) in [
        (["--seccomp-eperm", "164"], "seccomp"),
        (["--drop-cap", CAP_SYS_TIME], "capability"),
    ] {
        let mut args: Vec<&str> = setup.to_vec();
        args.extend_from_slice(SETTIME_NULL);
        let refused = probe(Some(&cgroup), &args);
        assert_eq!(refused.errno(), EPERM, "{layer}: {refused:?}");
        let events = events_of(&tail, refused.pid());
        // Neither refusal reaches the enforcer's LSM program: seccomp stops the call before it
        // runs, the capability LSM answers the capability check before bpf does.
        assert_eq!(by_source(&events, "lsm").len(), 0, "{layer}: {events:?}");
        let syscall = by_source(&events, "syscall");
        assert_eq!(syscall.len(), 1, "{layer}: {events:?}");
        assert_eq!(syscall[0]["enforcer"]["refused_by"], layer, "{events:?}");
    }
}

/// Runs the scripted workload in `cgroup`: a no-op clock set and a tmpfs mount, plus a new
/// session keyring when `one_more`. Returns each step's errno.
fn workload(cgroup: &Cgroup, scratch: &Scratch, one_more: bool) -> Vec<(String, i64)> {
    let mut steps = vec![
        (
            "settime".to_owned(),
            probe(Some(cgroup), SETTIME_NULL).errno(),
        ),
        (
            "mount".to_owned(),
            probe(Some(cgroup), &["mount-tmpfs", &scratch.path("dst")]).errno(),
        ),
    ];
    if one_more {
        // Joining a new session keyring: one key_alloc check, refused with EPERM once.
        steps.push((
            "keyctl".to_owned(),
            probe(Some(cgroup), &["join-session", "sys-record-ring"]).errno(),
        ));
    }
    steps
}

#[test]
fn record_suggest_yields_a_policy_the_workload_runs_under() {
    let cgroup = Cgroup::new("sys-record");
    let scratch = Scratch::new("sys-record");
    let mut record = Command::new(enforcer_bin())
        .args([
            "record",
            "--cgroup",
            cgroup.arg(),
            "--duration",
            "4s",
            "--suggest",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start record");
    // The workload starts once record says it records (its policy and reader are in place): a
    // fixed pause raced a slow boot.
    let mut stderr_lines = BufReader::new(record.stderr.take().expect("stderr")).lines();
    let mut stderr = String::new();
    for line in stderr_lines.by_ref() {
        let line = line.expect("record stderr");
        stderr.push_str(&line);
        stderr.push('\n');
        if line.starts_with("enforcer: recording ") {
            break;
        }
    }
    let recorded = workload(&cgroup, &scratch, false);
    assert!(
        recorded.iter().all(|(_, errno)| *errno == 0),
        "{recorded:?}"
    );
    for line in stderr_lines.map_while(Result::ok) {
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let output = record.wait_with_output().expect("record");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("    deny: [keyctl, reboot, kexec]\n"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("    audit: [mount, settime]\n"),
        "{stdout}\n{stderr}"
    );
    // The recording policy is gone.
    let list = enforcer_ok(&["list", "--json"]);
    assert!(
        !list.contains(&format!("\"cgroup_id\":{}", cgroup.id())),
        "{list}"
    );

    let file = "/tmp/sys-record.yaml";
    fs::write(file, &stdout).expect("write suggestion");
    enforcer_ok(&["apply", "-f", file]);
    let _ = nix::mount::umount2(
        scratch.path("dst").as_str(),
        nix::mount::MntFlags::MNT_DETACH,
    );
    let same = workload(&cgroup, &scratch, false);
    assert!(same.iter().all(|(_, errno)| *errno == 0), "{same:?}");
    assert_eq!(counters(&cgroup, "keyctl").1, 0);
    assert_eq!(counters(&cgroup, "mount").1, 0);
    assert_eq!(counters(&cgroup, "settime").1, 0);

    let _ = nix::mount::umount2(
        scratch.path("dst").as_str(),
        nix::mount::MntFlags::MNT_DETACH,
    );
    let more = workload(&cgroup, &scratch, true);
    assert_eq!(
        more,
        vec![
            ("settime".to_owned(), 0),
            ("mount".to_owned(), 0),
            ("keyctl".to_owned(), EPERM)
        ]
    );
    // Exactly that one call denied.
    assert_eq!(counters(&cgroup, "keyctl").1, 1);
    assert_eq!(counters(&cgroup, "mount").1, 0);
    assert_eq!(counters(&cgroup, "settime").1, 0);
}

/// What `kill` on the syscall layer leaves behind, per matrix case (measured in the VM on 6.1 and
/// 6.12; the README's table): `Some(true)` the change happened before the caller died,
/// `Some(false)` it did not (the sequence died after its first call), `None` nothing lasting to
/// observe.
pub fn kill_side_effect(case: &str) -> Option<bool> {
    match case {
        "settimeofday" | "clock_settime" | "adjtimex" | "clock_adjtime" => Some(true),
        "mount_new" | "mount_bind" | "mount_move" | "remount" | "propagation" | "umount2"
        | "mount_setattr" => Some(true),
        // open_tree / fsopen / fspick run, the caller dies before move_mount / fsconfig.
        "fsmount_attach" | "open_tree_clone" | "fspick" => Some(false),
        "add_key" | "keyctl_update" | "keyctl_setperm" => Some(true),
        _ => None,
    }
}

#[test]
fn an_upgrade_in_place_replaces_the_syscall_layer_links_too() {
    use std::os::unix::fs::MetadataExt;
    const LINKS: [&str; 2] = [
        "/sys/fs/bpf/enforcer/v1/links/sys_enter",
        "/sys/fs/bpf/enforcer/v1/links/sys_exit",
    ];
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            let _ = crate::harness::enforcer(&["reset"]);
        }
    }
    let _reset = Reset;
    let cgroup = Cgroup::new("sys-upgrade");
    let attach = [
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--layer",
        "both",
        "--audit",
        "settime",
    ];
    enforcer_ok(&attach);
    let pins = || -> Vec<u64> {
        LINKS
            .iter()
            .map(|link| fs::metadata(link).expect("link pinned").ino())
            .collect()
    };
    let before = pins();
    // The second build (another BPF object) replaces every program in place, the on-demand
    // syscall layer's included: each pin is renamed over by a new link's.
    let object = crate::upgrade::next_object();
    let mut next: Vec<&str> = vec!["--bpf-object", &object];
    next.extend_from_slice(&attach);
    let run = crate::harness::enforcer(&next);
    assert!(run.status.success(), "{run:?}");
    let after = pins();
    assert!(
        before.iter().zip(&after).all(|(b, a)| b != a),
        "the syscall layer's links were not replaced: {before:?} -> {after:?}"
    );
    let tail = Tail::start(&[]);
    let call = probe(Some(&cgroup), SETTIME_NULL);
    assert_eq!(call.errno(), 0, "{call:?}");
    let events = events_of(&tail, call.pid());
    assert_eq!(by_source(&events, "syscall").len(), 1, "{events:?}");
}
