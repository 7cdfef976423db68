//! `enforcer check`: on a kernel with BPF LSM active, every check passes and the self-test
//! confirms enforcement, leaving no cgroup, policy or (when it installed them) programs behind.
//! Module `nobpf` runs in a boot of its own, without bpf in `lsm=` (`cargo xtask test` skips it in
//! the main boot): there `check` and `attach` must say why this kernel cannot enforce.
use std::{fs, path::PathBuf};

use serde_json::Value;

use crate::harness::{CGROUP_ROOT, Cgroup, Tail, enforcer, enforcer_ok};

const CHECKS: [&str; 9] = [
    "privileges",
    "kernel",
    "btf",
    "lsm",
    "cgroup",
    "bpffs",
    "self-test",
    "tamper",
    "mode",
];
const PIN_BASE: &str = "/sys/fs/bpf/enforcer";
/// The exit code for "this kernel cannot enforce".
const CANNOT_ENFORCE: i32 = 5;

/// Files (pins) under enforcer's bpffs directory.
fn pins() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from(PIN_BASE)];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Throwaway cgroups and mount directories a check left behind.
fn leftovers() -> Vec<PathBuf> {
    [CGROUP_ROOT, "/tmp"]
        .iter()
        .flat_map(|dir| fs::read_dir(dir).into_iter().flatten().flatten())
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("enforcer-check-"))
        })
        .collect()
}

fn policy_count() -> usize {
    let list: Value = serde_json::from_str(&enforcer_ok(&["list", "--json"])).expect("list JSON");
    list["policies"].as_array().expect("policies").len()
}

/// The text line of one check: `<status>  <name>  <detail>`.
fn line<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no {name} line in:\n{stdout}"))
}

fn parse(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|err| panic!("check --json: {err}: {stdout}"))
}

fn entry<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|check| check["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {doc}"))
}

#[test]
fn passes_and_confirms_enforcement() {
    // Programs already installed (by this attach) are used and stay, with every policy.
    let bystander = Cgroup::new("check-bystander");
    enforcer_ok(&["attach", "--cgroup", bystander.arg(), "--audit", "settime"]);
    let before = enforcer_ok(&["list", "--json"]);
    let pins_before = pins();
    // A running tail keeps getting events: check reads counters, never the ring buffer.
    let tail = Tail::start(&[]);

    let run = enforcer(&["check"]);

    // Shown with --nocapture (RUST_TEST_NOCAPTURE=1 on the VM's kernel command line).
    print!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code(), Some(0), "{run:?}");
    for name in CHECKS {
        let found = line(&run.stdout, name);
        assert!(found.starts_with("ok "), "{found}");
    }
    let self_test = line(&run.stdout, "self-test");
    for call in [
        "settimeofday EPERM",
        "mount EPERM",
        "add_key ",
        "reboot EPERM",
        "kexec_load EPERM",
    ] {
        assert!(self_test.contains(call), "{self_test}");
    }
    assert!(
        self_test.contains("each counted exactly once"),
        "{self_test}"
    );
    assert!(self_test.contains("enforcer tail"), "{self_test}");
    assert!(
        self_test.contains("installed before and stay"),
        "{self_test}"
    );
    assert_eq!(
        run.stdout.lines().last(),
        Some("this machine can enforce"),
        "{run:?}"
    );

    for op in ["settime", "mount", "keyctl", "reboot", "kexec"] {
        let event = tail.wait_for(|event| {
            event["process"]["name"] == "enforcer-check" && event["enforcer"]["operation"] == op
        });
        assert_eq!(event["enforcer"]["action"], "deny", "{event}");
    }
    assert_eq!(leftovers(), Vec::<PathBuf>::new());
    assert_eq!(enforcer_ok(&["list", "--json"]), before, "policies changed");
    assert_eq!(pins(), pins_before);
}

#[test]
fn json_has_every_check_ok_or_warn() {
    let run = enforcer(&["check", "--json"]);
    print!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code(), Some(0), "{run:?}");
    let doc = parse(&run.stdout);
    assert_eq!(doc["ok"], true, "{doc}");
    let checks = doc["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, CHECKS);
    for check in checks {
        assert!(
            check["status"] == "ok" || check["status"] == "warn",
            "{check}"
        );
        assert!(check["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    assert_eq!(leftovers(), Vec::<PathBuf>::new());
}

#[test]
fn removes_the_programs_it_installed() {
    assert_eq!(policy_count(), 0, "an earlier test left a policy behind");
    enforcer_ok(&["reset"]);
    assert_eq!(pins(), Vec::<PathBuf>::new());

    let run = enforcer(&["check"]);

    print!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code(), Some(0), "{run:?}");
    let self_test = line(&run.stdout, "self-test");
    assert!(self_test.starts_with("ok "), "{self_test}");
    assert!(
        self_test.contains("removed the programs again"),
        "{self_test}"
    );
    assert_eq!(pins(), Vec::<PathBuf>::new(), "check left programs pinned");
    assert_eq!(leftovers(), Vec::<PathBuf>::new());
    assert_eq!(policy_count(), 0);
}

/// Booted with `lsm=` lacking bpf (`cargo xtask test` does it in a separate boot per kernel).
mod nobpf {
    use super::*;

    fn active_lsms() -> String {
        let active = fs::read_to_string("/sys/kernel/security/lsm").expect("LSM list");
        let active = active.trim().to_owned();
        assert!(
            !active.split(',').any(|lsm| lsm == "bpf"),
            "this boot has bpf active ({active}); nobpf tests need a boot without it"
        );
        active
    }

    #[test]
    fn check_fails_on_the_lsm_list_and_names_the_boot_parameter() {
        let active = active_lsms();
        let wanted = format!("lsm={active},bpf");

        let run = enforcer(&["check", "--json"]);

        print!("{}{}", run.stdout, run.stderr);
        assert_eq!(run.code(), Some(CANNOT_ENFORCE), "{run:?}");
        let doc = parse(&run.stdout);
        assert_eq!(doc["ok"], false);
        let lsm = entry(&doc, "lsm");
        assert_eq!(lsm["status"], "fail", "{lsm}");
        assert_eq!(
            lsm["fix"],
            format!("add {wanted} to the kernel command line")
        );
        let self_test = entry(&doc, "self-test");
        assert_eq!(self_test["status"], "fail", "{self_test}");
        assert!(
            self_test["detail"]
                .as_str()
                .is_some_and(|d| d.contains("BPF LSM is not active")),
            "{self_test}"
        );
        for name in ["privileges", "kernel", "btf", "cgroup", "bpffs"] {
            assert_eq!(entry(&doc, name)["status"], "ok", "{doc}");
        }
        // Without BPF LSM this kernel still gets the syscall layer.
        let mode = entry(&doc, "mode");
        assert_eq!(mode["status"], "warn", "{mode}");
        assert!(
            mode["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("syscall layer only")),
            "{mode}"
        );

        let run = enforcer(&["check"]);
        print!("{}{}", run.stdout, run.stderr);
        assert_eq!(run.code(), Some(CANNOT_ENFORCE), "{run:?}");
        let lsm = line(&run.stdout, "lsm");
        assert!(lsm.starts_with("fail "), "{lsm}");
        assert!(lsm.contains(&wanted), "{lsm}");
        assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
        assert_eq!(pins(), Vec::<PathBuf>::new(), "check pinned something");
        assert_eq!(leftovers(), Vec::<PathBuf>::new());
    }

    #[test]
    fn attach_says_bpf_lsm_is_not_active_and_pins_nothing() {
        active_lsms();
        let cgroup = Cgroup::new("nobpf");

        let run = enforcer(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);

        assert_eq!(run.code(), Some(CANNOT_ENFORCE), "{run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "one line: {:?}", run.stderr);
        assert!(
            run.stderr.contains("BPF LSM is not active"),
            "{:?}",
            run.stderr
        );
        assert_eq!(pins(), Vec::<PathBuf>::new(), "attach pinned something");
    }
}
