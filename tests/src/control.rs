//! The daemon's control socket: with `enforcer daemon` up, `attach`, `detach`, `apply` and `list`
//! go through it and print exactly what the direct path prints, bad input gets the same codes and
//! changes nothing, a client that is not root is refused, each change is a state record on the
//! daemon's stdout, and the policies it sets are enforced.
use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    daemon::Daemon,
    harness::{Cgroup, counters, enforcer, enforcer_bin, enforcer_ok, probe},
    matrix::EPERM,
};

const CONTROL: &str = "/run/enforcer/control.sock";
const NOT_PRIVILEGED: i32 = 6;
const DAEMON_GONE: i32 = 9;
const TIMEOUT: Duration = Duration::from_secs(30);

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn write(name: &str, text: &str) -> String {
    let path = format!("/tmp/{name}.yaml");
    fs::write(&path, text).expect("write policy file");
    path
}

/// The daemon's `state` records, in order.
fn state_records(daemon: &Daemon) -> Vec<Value> {
    daemon
        .events()
        .into_iter()
        .filter(|record| record["event"]["kind"] == "state")
        .collect()
}

/// What one run printed and how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The same commands, each one's full outcome: successes, a replacement, the diff, removals, and
/// bad input that must change nothing.
fn script(a: &Cgroup, b: &Cgroup) -> Vec<Outcome> {
    let both = write(
        "ctl-both",
        &format!(
            "policies:\n  - cgroup: {}\n    deny: [settime]\n  - cgroup: {}\n    audit: [mount]\n",
            a.arg(),
            b.id()
        ),
    );
    let bad_op = write(
        "ctl-bad-op",
        &format!("policies:\n  - cgroup: {}\n    deny: [fly]\n", a.arg()),
    );
    let bad_cgroup = write(
        "ctl-bad-cgroup",
        "policies:\n  - cgroup: /ctl-no-such\n    deny: [mount]\n",
    );
    let b_id = b.id().to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["attach", "--cgroup", a.arg(), "--deny", "settime"],
        vec![
            "attach",
            "--cgroup",
            a.arg(),
            "--audit",
            "mount",
            "--kill",
            "keyctl",
        ],
        vec!["list", "--json"],
        vec!["list"],
        vec!["apply", "-f", &both, "--dry-run"],
        vec!["apply", "-f", &both],
        vec!["apply", "-f", &both],
        vec!["apply", "-f", &both, "--dry-run", "--prune"],
        vec!["list", "--json"],
        // Bad input: the direct path's codes, and nothing changes.
        vec!["attach", "--cgroup", a.arg(), "--deny", "fly"],
        vec![
            "attach",
            "--cgroup",
            a.arg(),
            "--deny",
            "mount",
            "--audit",
            "mount",
        ],
        vec!["attach", "--cgroup", "/ctl-no-such", "--deny", "mount"],
        vec!["detach", "--cgroup", "/ctl-no-such"],
        vec!["apply", "-f", &bad_op],
        vec!["apply", "-f", &bad_cgroup],
        vec!["apply", "-f", "/tmp/ctl-no-such.yaml"],
        vec!["list", "--json"],
        vec!["detach", "--cgroup", a.arg()],
        vec!["detach", "--cgroup", &b_id],
        vec!["detach", "--cgroup", a.arg()],
        vec!["detach", "--cgroup", "999999999"],
        vec!["list", "--json"],
    ];
    commands
        .into_iter()
        .map(|args| {
            let run = enforcer(&args);
            Outcome {
                args: args.iter().map(|arg| (*arg).to_owned()).collect(),
                code: run.code(),
                stdout: run.stdout,
                stderr: run.stderr,
            }
        })
        .collect()
}

#[test]
fn through_the_daemon_every_command_prints_what_the_direct_path_prints() {
    let a = Cgroup::new("ctl-a");
    let b = Cgroup::new("ctl-b");
    let _ = fs::remove_file(CONTROL);
    let direct = script(&a, &b);
    // The script ends where it started, with neither cgroup holding a policy.
    let mut daemon = Daemon::start(&[]);
    let mode = fs::metadata(CONTROL).expect("control socket").permissions();
    assert_eq!(mode.mode() & 0o777, 0o600, "socket mode {:o}", mode.mode());
    let through = script(&a, &b);

    for (direct, through) in direct.iter().zip(&through) {
        assert_eq!(direct, through, "differs through the daemon");
    }
    assert_eq!(direct.len(), through.len());
    // Sanity: the script did what it says, and bad input had its documented code.
    let codes: Vec<Option<i32>> = through.iter().map(|outcome| outcome.code).collect();
    assert_eq!(
        codes,
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 4, 4, 3, 4, 3, 0, 0, 0, 7, 7, 0
        ]
        .map(Some),
        "{through:#?}"
    );
    for outcome in &through {
        let lines = outcome.stderr.lines().count();
        let want = usize::from(outcome.code != Some(0));
        assert_eq!(lines, want, "{outcome:?}");
    }
    assert!(
        through[5].stdout.contains("applied: 2 changed"),
        "{through:?}"
    );
    assert!(through[6].stdout.contains("applied: 0 changed"));
    assert_eq!(
        through[8].stdout, through[16].stdout,
        "bad input changed state"
    );

    // One state record per change, none for reads, dry runs and bad input.
    wait_until("the daemon to log six changes", || {
        state_records(&daemon).len() >= 6
    });
    thread::sleep(Duration::from_millis(300));
    let records = state_records(&daemon);
    let mut summary: Vec<(String, u64, String, String, String)> = records
        .iter()
        .map(|r| {
            (
                r["event"]["action"].as_str().unwrap_or("").to_owned(),
                r["cgroup"]["id"].as_u64().unwrap_or(0),
                r["cgroup"]["path"].as_str().unwrap_or("").to_owned(),
                r["enforcer"]["command"].as_str().unwrap_or("").to_owned(),
                r["enforcer"]["policy"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    // `apply` changes cgroups in the order of their ids.
    summary[2..4].sort_by(|x, y| x.2.cmp(&y.2));
    let row = |action: &str, cgroup: &Cgroup, command: &str, policy: &str| {
        (
            action.to_owned(),
            cgroup.id(),
            format!("/{}", cgroup.path.file_name().unwrap().to_str().unwrap()),
            command.to_owned(),
            policy.to_owned(),
        )
    };
    assert_eq!(
        summary,
        [
            row("policy-attached", &a, "attach", "deny=settime"),
            row("policy-attached", &a, "attach", "audit=mount kill=keyctl"),
            row("policy-attached", &a, "apply", "deny=settime"),
            row("policy-attached", &b, "apply", "audit=mount"),
            row("policy-detached", &a, "detach", "deny=settime"),
            row("policy-detached", &b, "detach", "audit=mount"),
        ],
        "{records:#?}"
    );
    assert!(records[0]["enforcer"]["previous_policy"].is_null());
    assert_eq!(
        records[1]["enforcer"]["previous_policy"], "deny=settime",
        "{records:#?}"
    );
    assert_eq!(records[0]["user"]["id"], "0");
    assert!(records.iter().all(|r| r["@timestamp"].is_string()));

    // SIGTERM removes the socket; the CLI then takes the direct path and says nothing about it.
    assert!(daemon.terminate().success());
    assert!(!Path::new(CONTROL).exists(), "the socket was left behind");
    let run = enforcer(&["attach", "--cgroup", a.arg(), "--deny", "settime"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
}

/// Runs `enforcer args` as uid/gid 65534; with `dac_override`, it keeps CAP_DAC_OVERRIDE (as an
/// ambient capability), so it can reach the root-only socket and the daemon must refuse it by its
/// uid.
fn unprivileged(args: &[&str], dac_override: bool) -> (Option<i32>, String, u32) {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const CAP_V3: u32 = 0x2008_0522;
    const CAP_DAC_OVERRIDE: u32 = 1;
    let mut command = Command::new(enforcer_bin());
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if dac_override && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
                return fail();
            }
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return fail();
            }
            if dac_override {
                let header = CapHeader {
                    version: CAP_V3,
                    pid: 0,
                };
                let bit = 1 << CAP_DAC_OVERRIDE;
                let data = [
                    CapData {
                        effective: bit,
                        permitted: bit,
                        inheritable: bit,
                    },
                    CapData {
                        effective: 0,
                        permitted: 0,
                        inheritable: 0,
                    },
                ];
                if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0
                    || libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE,
                        CAP_DAC_OVERRIDE,
                        0,
                        0,
                    ) != 0
                {
                    return fail();
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("run unprivileged");
    let pid = child.id();
    let output = child.wait_with_output().expect("wait");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        pid,
    )
}

#[test]
fn a_client_that_is_not_root_is_refused_and_nothing_changes() {
    let cgroup = Cgroup::new("ctl-unprivileged");
    let daemon = Daemon::start(&[]);
    let before = enforcer_ok(&["list", "--json"]);
    let attach = ["attach", "--cgroup", cgroup.arg(), "--deny", "settime"];

    // Without the capability it cannot reach the socket: the direct path refuses it.
    let (code, plain, _) = unprivileged(&attach, false);
    assert_eq!(code, Some(NOT_PRIVILEGED), "{plain}");
    assert_eq!(plain.lines().count(), 1, "{plain}");

    // With it, it reaches the daemon, which refuses it by its SO_PEERCRED uid, in the same words.
    for args in [
        &attach[..],
        &["detach", "--cgroup", cgroup.arg()][..],
        &["list", "--json"][..],
    ] {
        let (code, stderr, pid) = unprivileged(args, true);
        assert_eq!(code, Some(NOT_PRIVILEGED), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        if args[0] == "attach" {
            assert_eq!(
                stderr, plain,
                "the daemon's refusal reads like the direct path's"
            );
        }
        wait_until("the daemon to log the refusal", || {
            daemon
                .stderr()
                .contains(&format!("from uid 65534 (pid {pid})"))
        });
    }
    assert_eq!(enforcer_ok(&["list", "--json"]), before);
    assert!(state_records(&daemon).is_empty(), "{:?}", daemon.events());
}

#[test]
fn a_policy_set_through_the_daemon_is_enforced() {
    let cgroup = Cgroup::new("ctl-enforced");
    let daemon = Daemon::start(&[]);
    let attached = enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    assert!(attached.contains("settime=deny"), "{attached}");
    wait_until("the daemon to log the change", || {
        !state_records(&daemon).is_empty()
    });

    let attempt = probe(Some(&cgroup), &["settimeofday", "0"]);
    assert_eq!(attempt.errno(), EPERM);
    wait_until("the daemon to report the denial", || {
        daemon
            .events()
            .iter()
            .any(|e| e["process"]["pid"].as_u64() == Some(attempt.pid()))
    });
    assert_eq!(counters(&cgroup, "settime").1, 1);

    enforcer_ok(&["detach", "--cgroup", cgroup.arg()]);
    // settimeofday(NULL, NULL): refused under the policy, a no-op without it.
    assert_eq!(probe(Some(&cgroup), &["settime-loop", "1"]).ret(), 0);
}

#[test]
fn a_daemon_that_dies_before_answering_is_reported_and_nothing_changes() {
    let cgroup = Cgroup::new("ctl-gone");
    let mut daemon = Daemon::start(&[]);
    let before = enforcer_ok(&["list", "--json"]);
    // A stopped daemon still accepts connections (the backlog) but never reads them.
    let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let client = Command::new(enforcer_bin())
        .args(["attach", "--cgroup", cgroup.arg(), "--deny", "settime"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("attach");
    thread::sleep(Duration::from_millis(500));
    daemon.kill();
    let output = client.wait_with_output().expect("attach");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(DAEMON_GONE), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("went away"), "{stderr}");
    assert!(output.stdout.is_empty());
    // The stale socket is not answered: the CLI takes the direct path again.
    assert_eq!(enforcer_ok(&["list", "--json"]), before);
}
