//! How policies apply: the cgroup tree, replacement, detach, counters and bad input.
use std::{
    fs,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use crate::{
    harness::{Cgroup, ClockGuard, counters, enforcer, enforcer_ok, probe, wall_seconds},
    matrix::{EPERM, TARGET_TIME},
};

const TARGET: &str = "2051222400";

fn clock_moved() -> bool {
    wall_seconds() >= TARGET_TIME - 60
}

#[test]
fn detach_restores_the_operation() {
    let _clock = ClockGuard::new();
    let cgroup = Cgroup::new("detach");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    assert_eq!(
        probe(Some(&cgroup), &["settimeofday", TARGET]).errno(),
        EPERM
    );

    enforcer_ok(&["detach", "--cgroup", cgroup.arg()]);

    assert_eq!(probe(Some(&cgroup), &["settimeofday", TARGET]).ret(), 0);
    assert!(clock_moved());
}

#[test]
fn a_cgroup_created_after_attach_is_covered_by_its_parent() {
    let _clock = ClockGuard::new();
    let parent = Cgroup::new("pod");
    enforcer_ok(&["attach", "--cgroup", parent.arg(), "--deny", "settime"]);
    let child = parent.child("container");
    let grandchild = child.child("worker");

    for cgroup in [&child, &grandchild] {
        let attempt = probe(Some(cgroup), &["settimeofday", TARGET]);
        assert_eq!(attempt.errno(), EPERM, "in {}", cgroup.arg());
    }
    assert!(!clock_moved());
    assert_eq!(
        counters(&parent, "settime").1,
        2,
        "counted on the policy's cgroup"
    );
}

#[test]
fn a_process_moved_in_after_attach_is_covered() {
    let _clock = ClockGuard::new();
    let cgroup = Cgroup::new("moved-in");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    // Started outside; moved in by the test (not by itself) before it tries.
    let probe_bin = crate::harness::probe_bin();
    let child = Command::new("/bin/sh")
        .args([
            "-c",
            &format!("sleep 1; exec {probe_bin} settimeofday {TARGET}"),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    fs::write(cgroup.path.join("cgroup.procs"), child.id().to_string()).expect("move");
    let output = child.wait_with_output().expect("wait");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("probe JSON");
    assert_eq!(report["errno"], EPERM);
    assert!(!clock_moved());
}

#[test]
fn the_nearest_policy_wins() {
    let _clock = ClockGuard::new();
    let parent = Cgroup::new("nearest");
    let child = parent.child("inner");
    enforcer_ok(&[
        "attach",
        "--cgroup",
        parent.arg(),
        "--deny",
        "settime,mount",
    ]);
    enforcer_ok(&["attach", "--cgroup", child.arg(), "--audit", "settime"]);

    assert_eq!(
        probe(Some(&parent), &["settimeofday", TARGET]).errno(),
        EPERM
    );
    assert_eq!(probe(Some(&child), &["settimeofday", TARGET]).ret(), 0);
    // The child's policy does not name mount, so mount is allowed there: nearest wins whole.
    assert_eq!(
        probe(Some(&child), &["umount", "/nonexistent"]).errno(),
        i64::from(libc::ENOENT)
    );
}

#[test]
fn replacing_a_policy_under_load_leaves_no_gap() {
    let cgroup = Cgroup::new("replace");
    let stop = "/tmp/replace-stop";
    let _ = fs::remove_file(stop);
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let probe_bin = crate::harness::probe_bin();
    let hammer = Command::new(probe_bin)
        .args(["--cgroup", cgroup.arg(), "settime-until", stop])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn hammer");
    while counters(&cgroup, "settime").1 == 0 {
        thread::sleep(Duration::from_millis(20));
    }
    for round in 0..10 {
        let action = if round % 2 == 0 { "--audit" } else { "--deny" };
        enforcer_ok(&["attach", "--cgroup", cgroup.arg(), action, "settime"]);
        thread::sleep(Duration::from_millis(50));
    }
    fs::write(stop, "").expect("stop the hammer");
    let output = hammer.wait_with_output().expect("hammer");
    let _ = fs::remove_file(stop);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let refused = report["ret"].as_u64().expect("refused count");
    let calls = report["calls"].as_u64().expect("call count");

    // Every call was decided by the old or the new policy: audited (permitted and counted) or
    // denied (refused and counted). A call that slipped through neither would be missing here.
    let (audited, denied, _) = counters(&cgroup, "settime");
    assert_eq!(denied, refused, "every refusal was a counted denial");
    assert_eq!(audited + denied, calls, "every call was audited or denied");
    assert!(
        audited > 0 && denied > 0,
        "both policies were in force: {audited} {denied}"
    );
}

#[test]
fn list_counts_every_denial() {
    let cgroup = Cgroup::new("counted");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);

    let attempt = probe(Some(&cgroup), &["settime-loop", "25"]);
    assert_eq!(attempt.ret(), 25, "every call in the loop must be refused");

    assert_eq!(counters(&cgroup, "settime"), (0, 25, 0));
    let list: serde_json::Value =
        serde_json::from_str(&enforcer_ok(&["list", "--json"])).expect("list JSON");
    let entry = list["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|p| p["cgroup_id"] == cgroup.id())
        .expect("policy listed");
    assert_eq!(entry["cgroup_path"], "/counted");
}

#[test]
fn a_read_only_adjtimex_is_not_a_clock_change() {
    let cgroup = Cgroup::new("adjtimex-read");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let attempt = probe(Some(&cgroup), &["adjtimex-read"]);
    assert!(attempt.ret() >= 0, "{attempt:?}");
    assert_eq!(counters(&cgroup, "settime").1, 0);
}

#[test]
fn bad_input_changes_nothing() {
    let cgroup = Cgroup::new("bad-input");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let before = enforcer_ok(&["list", "--json"]);
    // A regular file, and a directory of a cgroup v1 hierarchy (a named one, no controllers).
    fs::write("/tmp/not-a-cgroup", "").expect("file");
    fs::create_dir_all("/tmp/v1").expect("mkdir");
    nix::mount::mount(
        Some("cgroup"),
        "/tmp/v1",
        Some("cgroup"),
        nix::mount::MsFlags::empty(),
        Some("none,name=enforcertest"),
    )
    .expect("mount a cgroup v1 hierarchy");
    fs::create_dir_all("/tmp/v1/pod").expect("mkdir in v1");
    let v1 = V1Unmount;

    let cases: [(&[&str], i32); 9] = [
        (&["attach", "--cgroup", cgroup.arg(), "--deny", "fly"], 3),
        (
            &[
                "attach",
                "--cgroup",
                cgroup.arg(),
                "--deny",
                "settime",
                "--audit",
                "all",
            ],
            3,
        ),
        (&["attach", "--cgroup", cgroup.arg()], 3),
        (
            &["attach", "--cgroup", "/no/such/cgroup", "--deny", "settime"],
            4,
        ),
        (&["attach", "--cgroup", "/proc", "--deny", "settime"], 4),
        (&["attach", "--cgroup", "999999999", "--deny", "settime"], 4),
        (
            &[
                "attach",
                "--cgroup",
                "/tmp/not-a-cgroup",
                "--deny",
                "settime",
            ],
            4,
        ),
        (
            &["attach", "--cgroup", "/tmp/v1/pod", "--deny", "settime"],
            4,
        ),
        (&["detach", "--cgroup", "/sys/fs/cgroup"], 7),
    ];
    for (args, code) in cases {
        let run = enforcer(args);
        assert_eq!(run.code(), Some(code), "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "one line: {:?}", run.stderr);
    }
    assert_eq!(enforcer_ok(&["list", "--json"]), before);
    assert_eq!(
        probe(Some(&cgroup), &["settimeofday", TARGET]).errno(),
        EPERM
    );
    drop(v1);
}

/// Unmounts the test's cgroup v1 hierarchy.
struct V1Unmount;

impl Drop for V1Unmount {
    fn drop(&mut self) {
        let _ = fs::remove_dir("/tmp/v1/pod");
        let _ = nix::mount::umount("/tmp/v1");
    }
}
