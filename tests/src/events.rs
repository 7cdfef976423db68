//! What `enforcer tail` delivers: the fields of each operation's event, the JSON schema, the
//! cgroup filter, a storm with nothing lost silently, and a clean exit when the reader goes away.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    harness::{
        Cgroup, ClockGuard, Scratch, Tail, counters, enforcer_bin, enforcer_ok, make_key, probe,
        spawn_json_tail, spawn_storm, suppressed,
    },
    matrix::TARGET_TIME,
};

/// Attaches `--deny op` to a fresh cgroup, runs the probe there and returns its one event.
fn denied_event(name: &str, op: &str, args: &[&str]) -> (Cgroup, Value) {
    let cgroup = Cgroup::new(name);
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", op]);
    let tail = Tail::start(&[]);
    let attempt = probe(Some(&cgroup), args);
    assert_ne!(attempt.errno(), 0, "{attempt:?}");
    let event = tail.wait_for(|e| e["process"]["pid"].as_u64() == Some(attempt.pid()));
    (cgroup, event)
}

#[test]
fn a_mount_event_names_type_source_and_target() {
    let scratch = Scratch::new("ev-mount");
    let target = scratch.path("dst");
    let (cgroup, event) = denied_event("ev-mount", "mount", &["mount-tmpfs", &target]);
    let mount = &event["enforcer"]["mount"];
    assert_eq!(mount["fs_type"], "tmpfs");
    assert_eq!(mount["source"], "none");
    assert_eq!(mount["target"], target.as_str());
    assert_eq!(event["enforcer"]["hook"], "sb_mount");
    assert_eq!(event["enforcer"]["syscall"]["name"], "mount");
    assert_eq!(
        event["enforcer"]["detail"],
        format!("mount tmpfs none on {target}")
    );
    assert_eq!(event["cgroup"]["id"], cgroup.id());
    assert_eq!(event["cgroup"]["path"], "/ev-mount");
}

#[test]
fn a_new_mount_api_event_names_the_file_system_type() {
    let (_cgroup, event) = denied_event("ev-fsopen", "mount", &["fsmount-detached"]);
    assert_eq!(event["enforcer"]["hook"], "capable");
    assert_eq!(event["enforcer"]["hook_arg"], 21, "CAP_SYS_ADMIN");
    assert_eq!(event["enforcer"]["syscall"]["name"], "fsopen");
    assert_eq!(event["enforcer"]["mount"]["fs_type"], "tmpfs");
}

#[test]
fn a_key_event_names_type_and_description() {
    let (_cgroup, event) = denied_event("ev-add-key", "keyctl", &["add-key", "ev-secret", "x"]);
    let key = &event["enforcer"]["key"];
    assert_eq!(key["type"], "user");
    assert_eq!(key["description"], "ev-secret");
    assert_eq!(event["enforcer"]["syscall"]["name"], "add_key");
    assert_eq!(event["enforcer"]["detail"], "add_key user \"ev-secret\"");
}

/// The caller's ids come from its task and credentials, read at offsets found in the kernel's
/// BTF: a wrong offset shows up here as a wrong id.
#[test]
fn an_event_names_the_callers_user_group_and_thread() {
    let cgroup = Cgroup::new("ev-ids");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "keyctl"]);
    let tail = Tail::start(&[]);
    let attempt = probe(
        Some(&cgroup),
        &["--as", "1234:4321", "add-key", "ev-ids", "x"],
    );
    assert_ne!(attempt.errno(), 0, "{attempt:?}");
    let event = tail.wait_for(|e| e["process"]["pid"].as_u64() == Some(attempt.pid()));
    assert_eq!(event["user"]["id"], "1234");
    assert_eq!(event["group"]["id"], "4321");
    assert_eq!(event["process"]["thread"]["id"], attempt.pid());
    assert_eq!(event["process"]["name"], "probe");
}

#[test]
fn a_keyctl_event_names_the_key_and_the_permission() {
    let serial = make_key("ev-read", "payload");
    let (_cgroup, event) =
        denied_event("ev-keyctl", "keyctl", &["keyctl-read", &serial.to_string()]);
    let key = &event["enforcer"]["key"];
    assert_eq!(key["serial"], serial);
    assert_eq!(event["enforcer"]["hook"], "key_permission");
    assert!(key["permission"].as_i64().is_some(), "{event}");
    assert_eq!(
        event["enforcer"]["detail"],
        format!("keyctl read key {serial}")
    );
}

#[test]
fn a_time_event_names_the_call_and_the_requested_time() {
    let _clock = ClockGuard::new();
    let (_cgroup, event) = denied_event(
        "ev-time",
        "settime",
        &["clock_settime", &TARGET_TIME.to_string()],
    );
    assert_eq!(event["enforcer"]["syscall"]["name"], "clock_settime");
    assert_eq!(event["enforcer"]["time"]["requested_sec"], TARGET_TIME);
    assert_eq!(
        event["enforcer"]["time"]["requested"],
        "2035-01-01T00:00:00Z"
    );
    assert_eq!(event["enforcer"]["time"]["capability"], "CAP_SYS_TIME");
}

#[test]
fn json_lines_follow_the_documented_schema() {
    let (cgroup, event) = denied_event("ev-schema", "settime", &["settimeofday", "0"]);
    let timestamp = event["@timestamp"].as_str().expect("@timestamp");
    assert!(
        timestamp.len() >= 20 && timestamp.ends_with('Z'),
        "{timestamp}"
    );
    assert_eq!(event["event"]["kind"], "alert");
    assert_eq!(event["event"]["action"], "settime");
    assert_eq!(event["event"]["outcome"], "failure");
    assert_eq!(event["event"]["type"], serde_json::json!(["denied"]));
    assert!(event["process"]["pid"].is_u64());
    assert!(event["process"]["thread"]["id"].is_u64());
    assert_eq!(event["process"]["name"], "probe");
    assert_eq!(event["user"]["id"], "0");
    assert_eq!(event["group"]["id"], "0");
    assert_eq!(event["cgroup"]["id"], cgroup.id());
    for field in ["operation", "action", "hook", "detail"] {
        assert!(
            event["enforcer"][field].is_string(),
            "enforcer.{field}: {event}"
        );
    }
    for field in ["errno", "policy_cgroup_id", "hook_arg"] {
        assert!(
            event["enforcer"][field].is_number(),
            "enforcer.{field}: {event}"
        );
    }
    assert!(
        event["enforcer"]["syscall"]["args"]
            .as_array()
            .is_some_and(|a| a.len() == 6)
    );
}

#[test]
fn tail_filtered_by_a_cgroup_shows_only_that_subtree() {
    let pod = Cgroup::new("ev-pod");
    let container = pod.child("ctr");
    let other = Cgroup::new("ev-other");
    enforcer_ok(&["attach", "--cgroup", pod.arg(), "--deny", "settime"]);
    enforcer_ok(&["attach", "--cgroup", other.arg(), "--deny", "settime"]);
    let tail = Tail::start(&["--cgroup", pod.arg()]);

    let outside = probe(Some(&other), &["settimeofday", "0"]);
    let inside = probe(Some(&container), &["settimeofday", "0"]);

    let event = tail.wait_for(|e| e["process"]["pid"].as_u64() == Some(inside.pid()));
    assert_eq!(event["cgroup"]["path"], "/ev-pod/ctr");
    assert!(
        tail.settled_events_of(outside.pid()).is_empty(),
        "an event from outside the filter"
    );
}

#[test]
fn a_storm_is_delivered_dropped_or_suppressed_exactly() {
    const ATTEMPTS: u64 = 100_000;
    let cgroup = Cgroup::new("ev-storm");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let mut tail = spawn_json_tail(&cgroup);
    let storm = spawn_storm(&cgroup, ATTEMPTS);
    // Count without keeping 100k lines in memory.
    let pid_field = format!("\"pid\":{},", storm.id());
    let received = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let (r, d) = (Arc::clone(&received), Arc::clone(&dropped));
    let stdout = tail.stdout.take().expect("tail stdout");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&pid_field) && !line.contains("\"kind\":\"summary\"") {
                r.fetch_add(1, Ordering::Relaxed);
            } else if line.contains("events-dropped") {
                let record: Value = serde_json::from_str(&line).expect("drop record");
                let count = record["enforcer"]["dropped"].as_u64().expect("dropped");
                d.fetch_add(count, Ordering::Relaxed);
            }
        }
    });
    let output = storm.wait_with_output().expect("storm");
    let report: Value = serde_json::from_slice(&output.stdout).expect("storm JSON");
    assert_eq!(report["ret"].as_u64(), Some(ATTEMPTS), "every call refused");

    // What the event budget held back is counted exactly in the kernel.
    let suppressed = suppressed(&cgroup);
    let deadline = Instant::now() + Duration::from_secs(120);
    let total = || received.load(Ordering::Relaxed) + dropped.load(Ordering::Relaxed) + suppressed;
    while total() < ATTEMPTS && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_millis(500));
    let _ = tail.kill();
    let _ = tail.wait();
    let (received, dropped) = (
        received.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
    );
    eprintln!("storm: {received} received, {dropped} reported dropped, {suppressed} suppressed");
    assert_eq!(
        received + dropped + suppressed,
        ATTEMPTS,
        "{received} received + {dropped} dropped + {suppressed} suppressed"
    );
    assert_eq!(
        counters(&cgroup, "settime").1,
        ATTEMPTS,
        "the counter is exact regardless"
    );
}

#[test]
fn tail_ends_when_its_reader_goes_away() {
    let cgroup = Cgroup::new("ev-pipe");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let mut pipeline = Command::new("/bin/sh")
        .args(["-c", &format!("{} tail --json | head -n 1", enforcer_bin())])
        .stdout(Stdio::null())
        .spawn()
        .expect("pipeline");
    thread::sleep(Duration::from_millis(300));
    probe(Some(&cgroup), &["settimeofday", "0"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = pipeline.try_wait().expect("wait") {
            assert!(status.success(), "{status:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tail kept running after head exited"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kernel_debug_logs_follow_the_run_time_switch() {
    let cgroup = Cgroup::new("ev-debug");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let mut follower = Command::new(enforcer_bin())
        .args(["debug", "follow"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("debug follow");
    let stderr = follower.stderr.take().expect("stderr");
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });
    let mine = format!("cgroup={}", cgroup.id());
    let logged = || {
        lines
            .lock()
            .expect("lines")
            .iter()
            .any(|l| l.contains(&mine))
    };
    thread::sleep(Duration::from_millis(300));

    // Off by default: a denial logs nothing.
    probe(Some(&cgroup), &["settimeofday", "0"]);
    thread::sleep(Duration::from_millis(500));
    assert!(
        !logged(),
        "logged while off: {:?}",
        lines.lock().expect("lines")
    );

    enforcer_ok(&["debug", "on"]);
    probe(Some(&cgroup), &["settimeofday", "0"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logged() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    enforcer_ok(&["debug", "off"]);
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        logged(),
        "no kernel log line: {:?}",
        lines.lock().expect("lines")
    );
}
