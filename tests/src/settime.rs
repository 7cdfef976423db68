//! `settime`: settimeofday and clock_settime(CLOCK_REALTIME) under each action.
use crate::harness::{Cgroup, ClockGuard, Tail, enforcer, enforcer_ok, probe, wall_seconds};

const EPERM: i64 = 1;
/// 2035-01-01T00:00:00Z: far enough from the VM's real date that a moved clock is unmistakable.
const TARGET: i64 = 2_051_222_400;
const TARGET_ARG: &str = "2051222400";

fn clock_moved() -> bool {
    wall_seconds() >= TARGET - 60
}

fn assert_denied_with_event(call: &str) {
    let _clock = ClockGuard::new();
    let cgroup = Cgroup::new(&format!("deny-{call}"));
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let tail = Tail::start(&[]);

    let attempt = probe(Some(&cgroup), &[call, TARGET_ARG]);

    assert_eq!(
        attempt.errno(),
        EPERM,
        "{call} in the cgroup must fail with EPERM"
    );
    assert!(!clock_moved(), "{call} was refused but the clock moved");
    let event = tail.wait_for(|e| e["process"]["pid"].as_u64() == Some(attempt.pid()));
    assert_eq!(event["enforcer"]["operation"], "settime");
    assert_eq!(event["enforcer"]["action"], "deny");
    assert_eq!(event["enforcer"]["hook"], "settime");
    assert_eq!(event["enforcer"]["errno"], EPERM);
    assert_eq!(event["enforcer"]["args"][0], TARGET);
    assert_eq!(event["process"]["name"], "probe");
    assert_eq!(event["cgroup"]["id"], cgroup.id());
    assert_eq!(event["enforcer"]["policy_cgroup_id"], cgroup.id());
    assert_eq!(
        tail.settled_events_of(attempt.pid()).len(),
        1,
        "one event per denial"
    );
}

#[test]
fn settimeofday_is_denied_in_the_cgroup() {
    assert_denied_with_event("settimeofday");
}

#[test]
fn clock_settime_is_denied_in_the_cgroup() {
    assert_denied_with_event("clock_settime");
}

#[test]
fn a_process_outside_the_cgroup_is_not_affected() {
    let _clock = ClockGuard::new();
    let cgroup = Cgroup::new("deny-outside");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);

    let attempt = probe(None, &["settimeofday", TARGET_ARG]);

    assert_eq!(
        attempt.ret(),
        0,
        "outside the cgroup settimeofday must succeed"
    );
    assert!(clock_moved(), "the clock did not move outside the cgroup");
}

#[test]
fn audit_permits_and_reports() {
    let _clock = ClockGuard::new();
    let cgroup = Cgroup::new("audit");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--audit", "settime"]);
    let tail = Tail::start(&[]);

    let attempt = probe(Some(&cgroup), &["clock_settime", TARGET_ARG]);

    assert_eq!(attempt.ret(), 0, "audit must permit");
    assert!(clock_moved());
    let event = tail.wait_for(|e| e["process"]["pid"].as_u64() == Some(attempt.pid()));
    assert_eq!(event["enforcer"]["action"], "audit");
    assert_eq!(event["enforcer"]["errno"], 0);
}

#[test]
fn kill_kills_the_caller_before_the_clock_moves() {
    let _clock = ClockGuard::new();
    let cgroup = Cgroup::new("kill");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--kill", "settime"]);

    let attempt = probe(Some(&cgroup), &["settimeofday", TARGET_ARG]);

    assert_eq!(attempt.signal(), Some(libc::SIGKILL), "{attempt:?}");
    assert!(!clock_moved(), "the caller was killed but the clock moved");
}

#[test]
fn detach_restores_the_operation() {
    let _clock = ClockGuard::new();
    let cgroup = Cgroup::new("detach");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    assert_eq!(
        probe(Some(&cgroup), &["settimeofday", TARGET_ARG]).errno(),
        EPERM
    );

    enforcer_ok(&["detach", "--cgroup", cgroup.arg()]);

    assert_eq!(probe(Some(&cgroup), &["settimeofday", TARGET_ARG]).ret(), 0);
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
        let attempt = probe(Some(cgroup), &["settimeofday", TARGET_ARG]);
        assert_eq!(attempt.errno(), EPERM, "in {}", cgroup.arg());
    }
    assert!(!clock_moved());
}

#[test]
fn the_nearest_policy_wins() {
    let _clock = ClockGuard::new();
    let parent = Cgroup::new("nearest");
    let child = parent.child("inner");
    enforcer_ok(&["attach", "--cgroup", parent.arg(), "--deny", "settime"]);
    enforcer_ok(&["attach", "--cgroup", child.arg(), "--audit", "settime"]);

    assert_eq!(
        probe(Some(&parent), &["settimeofday", TARGET_ARG]).errno(),
        EPERM
    );
    assert_eq!(probe(Some(&child), &["settimeofday", TARGET_ARG]).ret(), 0);
}

#[test]
fn list_counts_every_denial() {
    let cgroup = Cgroup::new("counted");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);

    let attempt = probe(Some(&cgroup), &["settime-loop", "25"]);
    assert_eq!(attempt.ret(), 25, "every call in the loop must be refused");

    let list: serde_json::Value =
        serde_json::from_str(&enforcer_ok(&["list", "--json"])).expect("list JSON");
    let entry = list["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|p| p["cgroup_id"] == cgroup.id())
        .expect("policy listed");
    assert_eq!(entry["operations"]["settime"]["denied"], 25);
    assert_eq!(entry["cgroup_path"], "/counted");
}

#[test]
fn bad_input_changes_nothing() {
    let cgroup = Cgroup::new("bad-input");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let before = enforcer_ok(&["list", "--json"]);

    let cases: [(&[&str], i32); 4] = [
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
        (
            &["attach", "--cgroup", "/no/such/cgroup", "--deny", "settime"],
            4,
        ),
        (&["attach", "--cgroup", "/proc", "--deny", "settime"], 4),
    ];
    for (args, code) in cases {
        let run = enforcer(args);
        assert_eq!(run.code(), Some(code), "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "one line: {:?}", run.stderr);
    }
    assert_eq!(enforcer_ok(&["list", "--json"]), before);
    assert_eq!(
        probe(Some(&cgroup), &["settimeofday", "2051222400"]).errno(),
        1
    );
}
