//! The syscall layer natively on the host: raw tracepoints load and attach on kernels that
//! refuse BPF LSM, so these run without the VM (`cargo xtask test` runs them first, as root).
//!
//! Every guarded system call is made with harmless arguments (NULL pointers, invalid descriptors
//! and clock ids, the mount family inside a private mount namespace): the host clock, mounts and
//! keys never change. Each test works in a cgroup of its own under the cgroup v2 mount and reads
//! what the kernel did: the probe's errno or its death by SIGKILL, the events, the counters.
//! One test at a time: the event ring buffer has one consumer.
mod common;

use std::{
    env, fs,
    io::{BufRead, BufReader},
    os::unix::{fs::MetadataExt, process::ExitStatusExt},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use common::{cgroup_root, enforcer_bin};

/// (name, number, arguments): every guarded call with arguments that change nothing.
const CALLS: &[(&str, i64, &[i64])] = &[
    ("mount", 165, &[0, 0, 0, 0, 0]),
    ("umount2", 166, &[0, 0]),
    ("pivot_root", 155, &[0, 0]),
    ("open_tree", 428, &[-1, 0, 0]),
    ("move_mount", 429, &[-1, 0, -1, 0, 0]),
    ("fsopen", 430, &[0, 0]),
    ("fsconfig", 431, &[-1, 0, 0, 0, 0]),
    ("fsmount", 432, &[-1, 0, 0]),
    ("fspick", 433, &[-1, 0, 0]),
    ("mount_setattr", 442, &[-1, 0, 0, 0, 0]),
    ("add_key", 248, &[0, 0, 0, 0, 0]),
    ("request_key", 249, &[0, 0, 0, 0]),
    // KEYCTL_GET_KEYRING_ID of the thread keyring, without creating it.
    ("keyctl", 250, &[0, -1, 0]),
    // settimeofday(NULL, NULL): passes every check, changes nothing.
    ("settimeofday", 164, &[0, 0]),
    // CLOCK_REALTIME to -1 s: read, then EINVAL; the clock is untouched.
    ("clock_settime", 227, &[0, TIMESPEC_NEGATIVE]),
    // ADJ_TICK with a tick of 0: past the capability check, then EINVAL; nothing changes. A
    // read (modes 0), a NULL or an invalid clock id would not be a clock change at all.
    ("adjtimex", 159, &[TIMEX_BAD_TICK]),
    ("clock_adjtime", 305, &[0, TIMEX_BAD_TICK]),
    // reboot with wrong magic numbers: EINVAL right after the CAP_SYS_BOOT check. Never the
    // real magic.
    ("reboot", 169, &[0, 0, 0, 0]),
    // An undefined flag: EINVAL right after the CAP_SYS_BOOT check (ENOSYS where the kernel has
    // no kexec).
    ("kexec_load", 246, &[0, 0, 0, KEXEC_UNDEFINED_FLAG]),
    (
        "kexec_file_load",
        320,
        &[-1, -1, 0, 0, KEXEC_UNDEFINED_FLAG],
    ),
];

const KEXEC_UNDEFINED_FLAG: i64 = 0x8000;

/// Arguments the probe replaces with a pointer to a buffer (see [`raw`]): a `timespec` of -1
/// seconds, and a `struct timex` asking for `ADJ_TICK` with a tick of 0.
const TIMESPEC_NEGATIVE: i64 = i64::MIN;
const TIMEX_BAD_TICK: i64 = i64::MIN + 1;

const SETTIMEOFDAY: i64 = 164;
const CAP_SYS_TIME: u32 = 25;
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The exit code of `attach --layer syscall --deny` (main.rs: NotInLayer).
const EXIT_NOT_IN_LAYER: i32 = 12;

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the test body as root with the tests serialised, or says why it is skipped.
fn native() -> Option<MutexGuard<'static, ()>> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIPPED: the syscall-layer host tests need root (run `cargo xtask test` as root)"
        );
        return None;
    }
    Some(
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

fn probe_bin() -> &'static str {
    env!("CARGO_BIN_EXE_probe")
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn enforcer(args: &[&str]) -> Run {
    let output = Command::new(enforcer_bin())
        .args(args)
        .output()
        .expect("run enforcer");
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn enforcer_ok(args: &[&str]) -> String {
    let run = enforcer(args);
    assert!(
        run.status.success(),
        "enforcer {args:?} failed: {}{}",
        run.stdout,
        run.stderr
    );
    run.stdout
}

/// The stdout of a run that must have succeeded.
fn ok(run: Run) -> String {
    assert!(
        run.status.success(),
        "enforcer failed: {}{}",
        run.stdout,
        run.stderr
    );
    run.stdout
}

/// `enforcer attach --cgroup CGROUP --layer syscall ACTION OPS`.
fn attach_syscall(cgroup: &Cgroup, action: &str, ops: &str) -> Run {
    enforcer(&[
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--layer",
        "syscall",
        action,
        ops,
    ])
}

/// A test cgroup; its policy is detached and the directory removed on drop.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Self {
        let path = cgroup_root().join(name);
        let _ = enforcer(&["detach", "--cgroup", path.to_str().expect("utf-8")]);
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
        Self(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8")
    }

    fn id(&self) -> u64 {
        fs::metadata(&self.0).expect("stat cgroup").ino()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = enforcer(&["detach", "--cgroup", self.arg()]);
        let _ = fs::remove_dir(&self.0);
    }
}

/// What the probe reported, or how it died.
#[derive(Debug)]
struct Probe {
    status: ExitStatus,
    report: Option<Value>,
}

impl Probe {
    fn errno(&self) -> i64 {
        self.field("errno").as_i64().expect("errno")
    }

    fn ret(&self) -> i64 {
        self.field("ret").as_i64().expect("ret")
    }

    /// The call's return value as the kernel gave it (`-errno` on failure).
    fn kernel_ret(&self) -> i64 {
        if self.errno() != 0 {
            -self.errno()
        } else {
            self.ret()
        }
    }

    fn field(&self, name: &str) -> &Value {
        let report = self
            .report
            .as_ref()
            .unwrap_or_else(|| panic!("probe printed nothing: {:?}", self.status));
        &report[name]
    }
}

/// Runs the probe with `setup` options (`--cgroup DIR`, `--unshare-mount yes`, ...) and the call.
fn probe(setup: &[&str], op: &[String]) -> Probe {
    let output = Command::new(probe_bin())
        .args(setup)
        .args(op)
        .output()
        .expect("run probe");
    Probe {
        status: output.status,
        report: String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .map(|line| serde_json::from_str(line).expect("probe JSON")),
    }
}

fn raw(nr: i64, args: &[i64]) -> Vec<String> {
    let arg = |a: &i64| match *a {
        TIMESPEC_NEGATIVE => "buf:-1".to_owned(),
        TIMEX_BAD_TICK => "buf:16384".to_owned(),
        a => a.to_string(),
    };
    ["raw".to_owned(), nr.to_string()]
        .into_iter()
        .chain(args.iter().map(arg))
        .collect()
}

/// An argument the event must carry as given (not one the probe turned into a pointer).
fn literal(arg: i64) -> bool {
    arg != TIMESPEC_NEGATIVE && arg != TIMEX_BAD_TICK
}

/// The probe's set-up for `name`: in `cgroup`, and the mount family in a private namespace.
fn setup_for<'a>(cgroup: Option<&'a Cgroup>, name: &str) -> Vec<&'a str> {
    let mut setup = Vec::new();
    if let Some(cgroup) = cgroup {
        setup.extend(["--cgroup", cgroup.arg()]);
    }
    let mount_family = CALLS
        .iter()
        .position(|(call, _, _)| *call == name)
        .is_some_and(|i| i < 10);
    if mount_family {
        setup.extend(["--unshare-mount", "yes"]);
    }
    setup
}

/// A running `enforcer tail --json --cgroup`, collecting its lines.
struct Tail {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tail {
    fn start(cgroup: &Cgroup) -> Self {
        let mut child = Command::new(enforcer_bin())
            .args(["tail", "--json", "--cgroup", cgroup.arg()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tail");
        let stdout = child.stdout.take().expect("tail stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        thread::sleep(Duration::from_millis(300));
        Self { child, lines }
    }

    fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    fn wait_for(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(event) = self.events().into_iter().find(&matches) {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "no event for {what} within {EVENT_TIMEOUT:?}; tail printed: {:?}",
                self.lines.lock().expect("lines")
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every event of process `pid`, after giving the tail time to drain.
    fn settled_events_of(&self, pid: i64) -> Vec<Value> {
        thread::sleep(Duration::from_millis(500));
        self.events()
            .into_iter()
            .filter(|event| event["process"]["pid"].as_i64() == Some(pid))
            .collect()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `enforcer list --json` counters of one operation of a cgroup: (audited, denied, killed).
fn counters(cgroup: &Cgroup, op: &str) -> (u64, u64, u64) {
    let list: Value = serde_json::from_str(&enforcer_ok(&["list", "--json"])).expect("list JSON");
    let entry = list["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|p| p["cgroup_id"] == cgroup.id())
        .unwrap_or_else(|| panic!("{} is not listed: {list}", cgroup.arg()));
    let counts = &entry["operations"][op];
    let get = |key: &str| counts[key].as_u64().unwrap_or(0);
    (get("audited"), get("denied"), get("killed"))
}

fn syscall_link_pinned() -> bool {
    fs::read_dir("/sys/fs/bpf/enforcer")
        .into_iter()
        .flatten()
        .flatten()
        .any(|layout| layout.path().join("links/sys_enter").exists())
}

#[test]
fn audit_reports_every_guarded_call_with_its_return_value() {
    let Some(_serial) = native() else { return };
    let cgroup = Cgroup::new("enforcer-t6-audit");
    ok(attach_syscall(&cgroup, "--audit", "all"));
    assert!(
        syscall_link_pinned(),
        "attach did not attach the syscall layer"
    );
    let tail = Tail::start(&cgroup);
    for (name, nr, args) in CALLS {
        let outcome = probe(&setup_for(Some(&cgroup), name), &raw(*nr, args));
        assert!(outcome.status.success(), "{name}: {outcome:?}");
        let pid = outcome.field("pid").as_i64().expect("pid");
        let event = tail.wait_for(name, |event| {
            event["process"]["pid"].as_i64() == Some(pid)
                && event["enforcer"]["syscall"]["name"] == *name
        });
        let enforcer = &event["enforcer"];
        assert_eq!(enforcer["action"], "audit", "{name}: {event}");
        assert_eq!(enforcer["source"], "syscall", "{name}: {event}");
        assert_eq!(enforcer["hook"], "sys_exit", "{name}: {event}");
        assert_eq!(enforcer["syscall"]["nr"], *nr, "{name}: {event}");
        assert_eq!(
            enforcer["syscall"]["ret"].as_i64(),
            Some(outcome.kernel_ret()),
            "{name}: the event's return value is the one the caller saw: {event}"
        );
        let decoded: Vec<i64> = enforcer["syscall"]["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_u64().expect("arg") as i64)
            .collect();
        for (i, (seen, given)) in decoded.iter().zip(*args).enumerate() {
            if literal(*given) {
                assert_eq!(seen, given, "{name}: argument {i}: {event}");
            }
        }
    }
    // One decision counted per call, by operation.
    assert_eq!(counters(&cgroup, "mount"), (10, 0, 0));
    assert_eq!(counters(&cgroup, "keyctl"), (3, 0, 0));
    assert_eq!(counters(&cgroup, "settime"), (4, 0, 0));
    assert_eq!(counters(&cgroup, "reboot"), (1, 0, 0));
    assert_eq!(counters(&cgroup, "kexec"), (2, 0, 0));
}

#[test]
fn kill_ends_the_caller_of_every_guarded_call() {
    let Some(_serial) = native() else { return };
    let cgroup = Cgroup::new("enforcer-t6-kill");
    ok(attach_syscall(&cgroup, "--kill", "all"));
    let tail = Tail::start(&cgroup);
    for (name, nr, args) in CALLS {
        let outcome = probe(&setup_for(Some(&cgroup), name), &raw(*nr, args));
        assert_eq!(
            outcome.status.signal(),
            Some(libc::SIGKILL),
            "{name}: the caller was not killed: {outcome:?}"
        );
        assert!(
            outcome.report.is_none(),
            "{name} returned to user space: {outcome:?}"
        );
        tail.wait_for(name, |event| {
            event["enforcer"]["syscall"]["name"] == *name && event["enforcer"]["action"] == "kill"
        });
    }
    assert_eq!(counters(&cgroup, "mount"), (0, 0, 10));
    assert_eq!(counters(&cgroup, "keyctl"), (0, 0, 3));
    assert_eq!(counters(&cgroup, "settime"), (0, 0, 4));
    assert_eq!(counters(&cgroup, "reboot"), (0, 0, 1));
    assert_eq!(counters(&cgroup, "kexec"), (0, 0, 2));
}

/// A 32-bit call (`int $0x80`, here from the 64-bit probe) is judged by the 32-bit table: ia32
/// call 164 is setresuid, not settimeofday as on x86_64, and passes; ia32 79 is settimeofday and
/// is killed, with the event naming it. Without the kernel's mark of a 32-bit call, the first
/// would be killed and the second missed.
#[test]
fn thirty_two_bit_calls_are_judged_by_their_own_numbers() {
    let Some(_serial) = native() else { return };
    const IA32_GETPID: &str = "20";
    let check = probe(&[], &["raw32".into(), IA32_GETPID.into()]);
    if check.report.is_none() || check.errno() != 0 {
        eprintln!("skipped: this kernel does not run 32-bit system calls ({check:?})");
        return;
    }
    let cgroup = Cgroup::new("enforcer-t6-ia32");
    ok(attach_syscall(&cgroup, "--kill", "settime"));
    let tail = Tail::start(&cgroup);
    let as_strings = |args: &[&str]| args.iter().map(ToString::to_string).collect::<Vec<_>>();
    // setresuid(-1, -1, -1): changes nothing.
    let setresuid = probe(
        &setup_for(Some(&cgroup), "setresuid"),
        &as_strings(&["raw32", "164", "-1", "-1", "-1"]),
    );
    assert_eq!(setresuid.status.signal(), None, "{setresuid:?}");
    assert_eq!(setresuid.errno(), 0, "{setresuid:?}");
    // settimeofday(NULL, NULL): changes nothing either, but is a guarded call.
    let settime = probe(
        &setup_for(Some(&cgroup), "settimeofday"),
        &as_strings(&["raw32", "79", "0", "0"]),
    );
    assert_eq!(settime.status.signal(), Some(libc::SIGKILL), "{settime:?}");
    let event = tail.wait_for("ia32 settimeofday", |event| {
        event["enforcer"]["action"] == "kill"
    });
    assert_eq!(event["enforcer"]["syscall"]["name"], "settimeofday");
    assert_eq!(event["enforcer"]["syscall"]["compat"], true);
    assert_eq!(counters(&cgroup, "settime"), (0, 0, 1));

    // ia32 88 is reboot (x86_64 88 is symlink); with wrong magic numbers it changes nothing.
    ok(attach_syscall(&cgroup, "--kill", "settime,reboot"));
    let reboot = probe(
        &setup_for(Some(&cgroup), "reboot"),
        &as_strings(&["raw32", "88", "0", "0", "0", "0"]),
    );
    assert_eq!(reboot.status.signal(), Some(libc::SIGKILL), "{reboot:?}");
    let event = tail.wait_for("ia32 reboot", |event| {
        event["enforcer"]["syscall"]["name"] == "reboot"
    });
    assert_eq!(event["enforcer"]["syscall"]["compat"], true);
    assert_eq!(counters(&cgroup, "reboot"), (0, 0, 1));
}

#[test]
fn a_process_outside_the_cgroup_is_untouched() {
    let Some(_serial) = native() else { return };
    let cgroup = Cgroup::new("enforcer-t6-outside");
    ok(attach_syscall(&cgroup, "--kill", "all"));
    let tail = Tail::start(&cgroup);
    let outside = probe(&[], &raw(SETTIMEOFDAY, &[0, 0]));
    assert!(outside.status.success(), "{outside:?}");
    assert_eq!(outside.errno(), 0, "{outside:?}");
    let pid = outside.field("pid").as_i64().expect("pid");
    assert_eq!(tail.settled_events_of(pid), Vec::<Value>::new());
    // The same call from inside is killed: the policy is in force.
    let inside = probe(&["--cgroup", cgroup.arg()], &raw(SETTIMEOFDAY, &[0, 0]));
    assert_eq!(inside.status.signal(), Some(libc::SIGKILL), "{inside:?}");
}

/// Runs settimeofday(NULL, NULL) in an audited cgroup with `setup`; returns the event.
fn refused_settime(name: &str, setup: &[&str]) -> Value {
    let cgroup = Cgroup::new(name);
    ok(attach_syscall(&cgroup, "--audit", "settime"));
    let tail = Tail::start(&cgroup);
    let mut all = vec!["--cgroup", cgroup.arg()];
    all.extend_from_slice(setup);
    let outcome = probe(&all, &raw(SETTIMEOFDAY, &[0, 0]));
    assert_eq!(outcome.errno(), i64::from(libc::EPERM), "{outcome:?}");
    let pid = outcome.field("pid").as_i64().expect("pid");
    let events = tail.settled_events_of(pid);
    assert_eq!(events.len(), 1, "one event for the call: {events:?}");
    let event = events.into_iter().next().expect("one event");
    assert_eq!(event["enforcer"]["syscall"]["ret"], -i64::from(libc::EPERM));
    assert_eq!(event["enforcer"]["errno"], libc::EPERM);
    event
}

#[test]
fn a_seccomp_refusal_is_attributed_to_seccomp() {
    let Some(_serial) = native() else { return };
    let event = refused_settime(
        "enforcer-t6-seccomp",
        &["--seccomp-eperm", &SETTIMEOFDAY.to_string()],
    );
    assert_eq!(event["enforcer"]["refused_by"], "seccomp", "{event}");
}

#[test]
fn a_missing_capability_is_attributed_to_the_capability() {
    let Some(_serial) = native() else { return };
    let event = refused_settime(
        "enforcer-t6-capability",
        &["--drop-cap", &CAP_SYS_TIME.to_string()],
    );
    assert_eq!(event["enforcer"]["refused_by"], "capability", "{event}");
}

#[test]
fn deny_is_refused_in_syscall_mode_and_nothing_changes() {
    let Some(_serial) = native() else { return };
    let cgroup = Cgroup::new("enforcer-t6-deny");
    let run = attach_syscall(&cgroup, "--deny", "settime");
    assert_eq!(run.status.code(), Some(EXIT_NOT_IN_LAYER), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
    assert!(
        run.stderr.contains("cannot change a call's result"),
        "names the reason: {}",
        run.stderr
    );
    let list = enforcer(&["list", "--json"]);
    if list.status.success() {
        assert!(
            !list
                .stdout
                .contains(&format!("\"cgroup_id\":{}", cgroup.id())),
            "no policy was set: {}",
            list.stdout
        );
    }
}

#[test]
fn the_layer_detaches_with_the_last_policy_that_wants_it() {
    let Some(_serial) = native() else { return };
    let first = Cgroup::new("enforcer-t6-detach-a");
    let second = Cgroup::new("enforcer-t6-detach-b");
    for cgroup in [&first, &second] {
        ok(attach_syscall(cgroup, "--audit", "keyctl"));
    }
    assert!(syscall_link_pinned());
    enforcer_ok(&["detach", "--cgroup", first.arg()]);
    assert!(
        syscall_link_pinned(),
        "another policy still wants the layer"
    );
    enforcer_ok(&["detach", "--cgroup", second.arg()]);
    assert!(
        !syscall_link_pinned(),
        "the layer stays attached with no policy wanting it"
    );
}

#[test]
fn record_tallies_a_workload_and_suggests_the_strictest_policy() {
    let Some(_serial) = native() else { return };
    let cgroup = Cgroup::new("enforcer-t6-record");
    let record = Command::new(enforcer_bin())
        .args([
            "record",
            "--cgroup",
            cgroup.arg(),
            "--duration",
            "3s",
            "--suggest",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start record");
    thread::sleep(Duration::from_millis(1000));
    let inside = ["--cgroup", cgroup.arg()];
    // settimeofday(NULL, NULL) succeeds; a keyctl refused by seccomp; a clock_settime to a negative
    // time fails.
    assert_eq!(probe(&inside, &raw(SETTIMEOFDAY, &[0, 0])).errno(), 0);
    let mut seccomp = inside.to_vec();
    seccomp.extend(["--seccomp-eperm", "250"]);
    assert_eq!(
        probe(&seccomp, &raw(250, &[0, -1, 0])).errno(),
        i64::from(libc::EPERM)
    );
    assert_ne!(
        probe(&inside, &raw(227, &[0, TIMESPEC_NEGATIVE])).errno(),
        0
    );
    let output = record.wait_with_output().expect("record");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    let row = |op: &str| {
        stderr
            .lines()
            .find(|line| line.starts_with(op))
            .unwrap_or_else(|| panic!("no {op} row: {stderr}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // OPERATION CALLS SUCCEEDED FAILED REFUSED...
    assert_eq!(row("settime")[1..4], ["2", "1", "1"], "{stderr}");
    assert_eq!(
        row("keyctl")[1..6],
        ["1", "0", "0", "1", "seccomp"],
        "{stderr}"
    );
    assert_eq!(row("mount")[1..4], ["0", "0", "0"], "{stderr}");
    assert!(
        stdout.contains(&format!("  - cgroup: {}\n", cgroup.arg())),
        "{stdout}"
    );
    assert!(
        stdout.contains("    deny: [mount, keyctl, reboot, kexec]\n"),
        "{stdout}"
    );
    assert!(stdout.contains("    audit: [settime]\n"), "{stdout}");
    // The recording policy is gone, and with it the layer.
    assert!(!syscall_link_pinned());
}

#[test]
fn record_refuses_a_cgroup_with_a_policy_and_leaves_it() {
    let Some(_serial) = native() else { return };
    let cgroup = Cgroup::new("enforcer-t6-record-taken");
    ok(attach_syscall(&cgroup, "--kill", "mount"));
    let run = enforcer(&["record", "--cgroup", cgroup.arg(), "--duration", "1s"]);
    assert_eq!(run.status.code(), Some(4), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("already has a policy"),
        "{}",
        run.stderr
    );
    assert_eq!(counters(&cgroup, "mount"), (0, 0, 0));
    let list = enforcer_ok(&["list", "--json"]);
    assert!(list.contains("\"action\":\"kill\""), "policy kept: {list}");
}
