//! `enforcer apply -f`: declarative policies, the dry run, and bad input that changes nothing.
use std::{fs, os::unix::process::CommandExt, process::Command};

use crate::{
    harness::{Cgroup, enforcer, enforcer_ok, probe},
    matrix::EPERM,
};

fn write(name: &str, text: &str) -> String {
    let path = format!("/tmp/{name}.yaml");
    fs::write(&path, text).expect("write policy file");
    path
}

fn policies() -> String {
    enforcer_ok(&["list", "--json"])
}

#[test]
fn apply_sets_every_listed_policy_and_dry_run_changes_nothing() {
    let pod = Cgroup::new("apply-pod");
    let other = Cgroup::new("apply-other");
    let file = write(
        "apply",
        &format!(
            "policies:\n  - cgroup: {}\n    deny: [settime]\n  - cgroup: {}\n    audit: [mount]\n    kill: [keyctl]\n",
            pod.arg(),
            other.id()
        ),
    );
    let before = policies();
    let dry = enforcer_ok(&["apply", "-f", &file, "--dry-run"]);
    assert!(dry.contains("+ /apply-pod"), "{dry}");
    assert!(dry.contains("deny=settime"), "{dry}");
    assert_eq!(policies(), before, "a dry run changed the kernel's state");

    let applied = enforcer_ok(&["apply", "-f", &file]);
    assert!(applied.contains("applied: 2 changed"), "{applied}");
    assert_eq!(probe(Some(&pod), &["settimeofday", "0"]).errno(), EPERM);

    // Applying again is a no-op; a changed file is a replacement.
    assert!(enforcer_ok(&["apply", "-f", &file]).contains("applied: 0 changed"));
    let file = write(
        "apply",
        &format!(
            "policies:\n  - cgroup: {}\n    audit: [settime]\n",
            pod.arg()
        ),
    );
    let diff = enforcer_ok(&["apply", "-f", &file, "--dry-run"]);
    assert!(
        diff.contains("~ /apply-pod") && diff.contains("deny=settime -> audit=settime"),
        "{diff}"
    );
    enforcer_ok(&["apply", "-f", &file, "--prune"]);
    let list = policies();
    assert!(
        !list.contains("/apply-other"),
        "--prune kept an unlisted policy: {list}"
    );
}

#[test]
fn bad_policy_files_change_nothing() {
    let cgroup = Cgroup::new("apply-bad");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let before = policies();
    let arg = cgroup.arg();
    let cases = [
        ("syntax", "policies:\n  - cgroup: [\n".to_owned(), 3, "line"),
        (
            "unknown-key",
            format!("policies:\n  - cgroup: {arg}\n    denny: [mount]\n"),
            3,
            "denny",
        ),
        (
            "unknown-op",
            format!("policies:\n  - cgroup: {arg}\n    deny: [fly]\n"),
            3,
            "fly",
        ),
        (
            "conflict",
            format!("policies:\n  - cgroup: {arg}\n    deny: [mount]\n    audit: [all]\n"),
            3,
            "mount",
        ),
        (
            "twice",
            format!(
                "policies:\n  - cgroup: {arg}\n    deny: [mount]\n  - cgroup: {arg}\n    deny: [keyctl]\n"
            ),
            3,
            "twice",
        ),
        (
            "no-cgroup",
            "policies:\n  - cgroup: /no/such\n    deny: [mount]\n".to_owned(),
            4,
            "does not exist",
        ),
        // A valid first entry does not get applied when a later one is bad.
        (
            "partly-bad",
            format!(
                "policies:\n  - cgroup: {arg}\n    audit: [mount]\n  - cgroup: /proc\n    deny: [mount]\n"
            ),
            4,
            "not a cgroup",
        ),
    ];
    for (name, text, code, needle) in cases {
        let file = write(&format!("bad-{name}"), &text);
        let run = enforcer(&["apply", "-f", &file]);
        assert_eq!(run.code(), Some(code), "{name}: {run:?}");
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "{name}: one line: {:?}",
            run.stderr
        );
        assert!(run.stderr.contains(needle), "{name}: {:?}", run.stderr);
        assert_eq!(policies(), before, "{name} changed the kernel's state");
    }
    let missing = enforcer(&["apply", "-f", "/tmp/no-such-file.yaml"]);
    assert_eq!(missing.code(), Some(3), "{missing:?}");
}

#[test]
fn without_privileges_nothing_changes() {
    let cgroup = Cgroup::new("unprivileged");
    let before = policies();
    let enforcer_bin = crate::harness::enforcer_bin();
    // SAFETY: only async-signal-safe calls between fork and exec.
    let output = unsafe {
        Command::new(enforcer_bin)
            .args(["attach", "--cgroup", cgroup.arg(), "--deny", "settime"])
            .pre_exec(|| {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
            .output()
    }
    .expect("run unprivileged");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(6), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(policies(), before);
}
