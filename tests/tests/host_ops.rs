//! The operator's side of the CLI, natively on the host: what a first session on a node trips
//! over (an interrupted `record`, relative cgroup paths, a failing `apply`, `check`'s advice, the
//! leftovers of `check` and `reset`, completions and the man page).
//!
//! Each test that changes BPF state works in a mount namespace of its own with a fresh bpffs on
//! /sys/fs/bpf, so its pins are its own: a test may `reset` or unmount bpffs without touching
//! the host's pins (or a concurrently running suite's). The syscall layer's programs it attaches
//! still run machine-wide, but only for the test's own cgroups. Cgroups are made under the host's
//! cgroup v2 mount and removed on drop. The tests run one at a time (`SERIAL`).
mod common;

use std::{
    env, fs,
    io::{BufRead, BufReader, Read, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, Output, Stdio},
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use common::{cgroup_root, enforcer_bin, text};

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the test body as root with the tests serialised, or says why it is skipped.
fn native() -> Option<MutexGuard<'static, ()>> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the operator host tests need root (run `cargo xtask test` as root)");
        return None;
    }
    Some(
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// A test cgroup directly under the cgroup v2 mount, removed on drop (its policy goes with the
/// namespace's bpffs).
struct Cgroup {
    name: String,
    path: PathBuf,
}

impl Cgroup {
    fn new(name: &str) -> Self {
        let path = cgroup_root().join(name);
        let _ = fs::remove_dir(path.join(name));
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
        Self {
            name: name.to_owned(),
            path,
        }
    }

    fn arg(&self) -> &str {
        self.path.to_str().expect("utf-8")
    }

    fn id(&self) -> u64 {
        fs::metadata(&self.path).expect("stat cgroup").ino()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(self.path.join(&self.name));
        let _ = fs::remove_dir(&self.path);
    }
}

/// A mount namespace kept alive by a `sleep`, with a fresh bpffs on /sys/fs/bpf (or, with
/// `bpffs: false`, none at all). Commands run in it through `nsenter`; its files are reachable
/// from outside through `/proc/<pid>/root`.
struct Namespace {
    holder: Child,
}

impl Namespace {
    fn new(bpffs: bool) -> Self {
        let mount = if bpffs {
            "mount -t bpf bpf /sys/fs/bpf"
        } else {
            "true"
        };
        let script = format!(
            "while mountpoint -q /sys/fs/bpf; do umount /sys/fs/bpf || exit 1; done; {mount} || exit 1; echo ready; exec sleep infinity"
        );
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("holder stdout"))
            .read_line(&mut line)
            .expect("read holder");
        assert_eq!(line.trim(), "ready", "the namespace was not set up");
        Self { holder }
    }

    /// A path inside the namespace, seen from outside.
    fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.holder.id()))
    }

    /// `enforcer ARGS` in the namespace, with its working directory `cwd` (`/` if none).
    fn enforcer(&self, cwd: Option<&Path>, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("--target")
            .arg(self.holder.id().to_string())
            .arg("--mount")
            .arg(format!(
                "--wdns={}",
                cwd.unwrap_or(Path::new("/")).display()
            ))
            .arg("--")
            .arg(enforcer_bin())
            .args(args);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_in(None, args)
    }

    fn run_in(&self, cwd: Option<&Path>, args: &[&str]) -> Output {
        self.enforcer(cwd, args).output().expect("run enforcer")
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "enforcer {args:?}: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    /// Ids of the cgroups `enforcer list` shows.
    fn listed(&self) -> Vec<u64> {
        let list: Value = serde_json::from_str(&self.ok(&["list", "--json"])).expect("list JSON");
        list["policies"]
            .as_array()
            .expect("policies")
            .iter()
            .map(|p| p["cgroup_id"].as_u64().expect("id"))
            .collect()
    }

    fn syscall_links(&self) -> Vec<PathBuf> {
        ["sys_enter", "sys_exit"]
            .iter()
            .map(|name| self.path(&format!("/sys/fs/bpf/enforcer/v1/links/{name}")))
            .filter(|link| fs::symlink_metadata(link).is_ok())
            .collect()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // The namespace, its bpffs and every pin in it go with its last process.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Reads `stderr` until a line contains `marker`; returns what was read.
fn read_until(stderr: &mut BufReader<ChildStderr>, marker: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        match stderr.read_line(&mut line) {
            Ok(0) | Err(_) => panic!("no line with {marker:?}; stderr: {seen}"),
            Ok(_) => {
                seen += &line;
                if line.contains(marker) {
                    return seen;
                }
            }
        }
    }
}

/// Waits up to `limit` for `child` to end.
fn wait_for(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_interrupted_record_removes_its_policy_and_the_syscall_layer() {
    let Some(_serial) = native() else { return };
    let ns = Namespace::new(true);
    let cgroup = Cgroup::new("enforcer-ops-record");
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        let mut record = ns
            .enforcer(
                None,
                &["record", "--cgroup", cgroup.arg(), "--duration", "60s"],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start record");
        let mut stderr = BufReader::new(record.stderr.take().expect("stderr"));
        let said = read_until(&mut stderr, "recording");
        assert_eq!(ns.listed(), [cgroup.id()], "recording: {said}");
        assert_eq!(ns.syscall_links().len(), 2, "the layer is attached");
        kill(Pid::from_raw(record.id() as i32), signal).expect("signal record");
        let status = wait_for(&mut record, Duration::from_secs(10));
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        assert_eq!(
            ns.listed(),
            Vec::<u64>::new(),
            "{signal}: the recording policy stays ({status}): {rest}"
        );
        assert_eq!(
            ns.syscall_links(),
            Vec::<PathBuf>::new(),
            "{signal}: the syscall layer stays attached: {rest}"
        );
        assert_eq!(
            status.code(),
            Some(128 + signal as i32),
            "{signal}: exit code: {rest}"
        );
        assert!(rest.contains("interrupted"), "{signal}: says so: {rest}");
    }
    // And the next recording is not refused.
    let again = ns.run(&["record", "--cgroup", cgroup.arg(), "--duration", "1s"]);
    assert!(
        again.status.success(),
        "a second record: {}",
        text(&again.stderr)
    );
}

#[test]
fn a_relative_cgroup_is_relative_to_the_cgroup2_mount_whatever_the_cwd() {
    let Some(_serial) = native() else { return };
    let ns = Namespace::new(true);
    let cgroup = Cgroup::new("enforcer-ops-relative");
    // A child cgroup of the same name, and a plain directory of that name elsewhere.
    fs::create_dir(cgroup.path.join(&cgroup.name)).expect("child cgroup");
    let scratch = Scratch::new("enforcer-ops-cwd");
    let scratch = &scratch.0;
    fs::create_dir_all(scratch.join(&cgroup.name)).expect("plain directory");
    let expected = format!("attached /{} (id {}):", cgroup.name, cgroup.id());
    for cwd in [
        scratch.as_path(),
        cgroup.path.as_path(),
        cgroup_root().as_path(),
        Path::new("/"),
    ] {
        let attach = ns.run_in(
            Some(cwd),
            &[
                "attach",
                "--cgroup",
                &cgroup.name,
                "--layer",
                "syscall",
                "--audit",
                "mount",
            ],
        );
        let stdout = text(&attach.stdout);
        assert!(
            attach.status.success() && stdout.starts_with(&expected),
            "from {}: {stdout}{}",
            cwd.display(),
            text(&attach.stderr)
        );
        let detach = ns.run_in(Some(cwd), &["detach", "--cgroup", &cgroup.name]);
        assert_eq!(
            text(&detach.stdout),
            format!("detached /{}\n", cgroup.name),
            "from {}: {}",
            cwd.display(),
            text(&detach.stderr)
        );
    }
}

/// On a kernel that refuses BPF LSM, `apply` fails at the install: nothing may read as applied.
#[test]
fn a_failing_apply_prints_nothing_as_applied() {
    let Some(_serial) = native() else { return };
    let ns = Namespace::new(true);
    let cgroup = Cgroup::new("enforcer-ops-apply");
    let file = env::temp_dir().join(format!("enforcer-ops-apply-{}.yaml", std::process::id()));
    fs::write(
        &file,
        format!(
            "policies:\n  - cgroup: {}\n    deny: [mount]\n",
            cgroup.name
        ),
    )
    .expect("write policy file");
    let apply = ns.run(&["apply", "-f", file.to_str().expect("utf-8")]);
    let _ = fs::remove_file(&file);
    if apply.status.success() {
        eprintln!("SKIPPED: apply works on this kernel (it has BPF LSM)");
        return;
    }
    let (stdout, stderr) = (text(&apply.stdout), text(&apply.stderr));
    assert_eq!(apply.status.code(), Some(5), "{stdout}{stderr}");
    assert!(
        !stdout.contains(&format!("+ /{}", cgroup.name)),
        "the plan reads as applied: {stdout}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert_eq!(ns.listed(), Vec::<u64>::new());
}

/// `enforcer check` on a kernel that lists `bpf` among its active LSMs and still refuses BPF LSM
/// programs (this project's development hosts): the advice must not be to put `bpf` in `lsm=`.
#[test]
fn check_names_what_else_refuses_bpf_lsm_when_bpf_is_active() {
    let Some(_serial) = native() else { return };
    let ns = Namespace::new(true);
    let check = ns.run(&["check"]);
    let stdout = text(&check.stdout);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} line: {stdout}"))
            .to_owned()
    };
    let (lsm, self_test) = (line("lsm"), line("self-test"));
    if !lsm.starts_with("ok") || !self_test.contains("EPERM before verification") {
        eprintln!("SKIPPED: this kernel is not one that refuses BPF LSM with bpf active: {stdout}");
        return;
    }
    assert!(
        !self_test.contains("lsm="),
        "bpf is active, yet the fix is to add it: {self_test}"
    );
    for candidate in ["lockdown", "seccomp", "another LSM", "dmesg"] {
        assert!(
            self_test.contains(candidate),
            "{candidate} is not named: {self_test}"
        );
    }
    let mode = line("mode");
    assert!(!mode.contains("see the lsm line"), "{mode}");
    // attach says the same, through the same error.
    let cgroup = Cgroup::new("enforcer-ops-check");
    let attach = ns.run(&["attach", "--cgroup", cgroup.arg(), "--deny", "mount"]);
    let stderr = text(&attach.stderr);
    assert_eq!(attach.status.code(), Some(5), "{stderr}");
    assert!(
        !stderr.contains("lsm=") && stderr.contains("dmesg"),
        "{stderr}"
    );
}

/// With only the syscall layer attached, `debug follow` finds its programs (by the pinned maps
/// they use, not by name) and keeps following, saying they write no logs.
#[test]
fn debug_follow_finds_the_syscall_layers_programs() {
    let Some(_serial) = native() else { return };
    let ns = Namespace::new(true);
    let cgroup = Cgroup::new("enforcer-ops-debug");
    ns.ok(&[
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--layer",
        "syscall",
        "--audit",
        "mount",
    ]);
    let mut follow = ns
        .enforcer(None, &["debug", "follow"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start debug follow");
    let mut stderr = BufReader::new(follow.stderr.take().expect("stderr"));
    let mut first = String::new();
    stderr.read_line(&mut first).expect("read stderr");
    thread::sleep(Duration::from_millis(500));
    let running = follow.try_wait().expect("wait").is_none();
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(running, "debug follow ended: {first}");
    assert!(
        first.contains("sys_enter") && first.contains("sys_exit"),
        "names the programs it found: {first}"
    );
    ns.ok(&["detach", "--cgroup", cgroup.arg()]);
}

/// The mount points of the namespace (mountinfo's fifth field, with the filesystem type).
fn mounts(ns: &Namespace) -> Vec<String> {
    let mountinfo =
        fs::read_to_string(format!("/proc/{}/mountinfo", ns.holder.id())).expect("mountinfo");
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            Some(format!(
                "{} {}",
                left.split(' ').nth(4)?,
                right.split(' ').next()?
            ))
        })
        .collect()
}

/// `check` removes what it made: the bpffs and securityfs it mounted, the pin directories it
/// created (on a kernel that refuses BPF LSM it pins nothing that stays).
#[test]
fn check_leaves_no_mount_and_no_pin_directory() {
    let Some(_serial) = native() else { return };
    for bpffs in [false, true] {
        let ns = Namespace::new(bpffs);
        let before = mounts(&ns);
        let check = ns.run(&["check"]);
        let stdout = text(&check.stdout);
        if check.status.success() {
            eprintln!("SKIPPED: BPF LSM works here, so check's programs may stay: {stdout}");
            return;
        }
        assert_eq!(
            mounts(&ns),
            before,
            "bpffs mounted before: {bpffs}: {stdout}"
        );
        assert!(
            !ns.path("/sys/fs/bpf/enforcer").exists(),
            "bpffs mounted before: {bpffs}: a pin directory stays: {stdout}"
        );
    }
}

/// `reset` removes the pin directory itself, not only the layouts in it.
#[test]
fn reset_removes_the_pin_directory() {
    let Some(_serial) = native() else { return };
    let ns = Namespace::new(true);
    let cgroup = Cgroup::new("enforcer-ops-reset");
    ns.ok(&[
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--layer",
        "syscall",
        "--audit",
        "mount",
    ]);
    assert!(ns.path("/sys/fs/bpf/enforcer/v1/maps").exists());
    ns.ok(&["reset"]);
    assert!(!ns.path("/sys/fs/bpf/enforcer").exists());
    assert_eq!(ns.syscall_links(), Vec::<PathBuf>::new());
}

/// `apply -f -` reads the policy file from stdin, as `record --suggest | enforcer apply -f -`.
#[test]
fn apply_reads_the_file_from_stdin() {
    let Some(_serial) = native() else { return };
    let ns = Namespace::new(true);
    let cgroup = Cgroup::new("enforcer-ops-stdin");
    let mut apply = ns
        .enforcer(None, &["apply", "--dry-run", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start apply");
    apply
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            format!(
                "policies:\n  - cgroup: {}\n    audit: [mount]\n",
                cgroup.name
            )
            .as_bytes(),
        )
        .expect("write stdin");
    let output = apply.wait_with_output().expect("apply");
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.starts_with(&format!("+ /{} (id {}): ", cgroup.name, cgroup.id())),
        "{stdout}"
    );
    assert!(stdout.ends_with("dry run: nothing changed\n"), "{stdout}");
}

/// `enforcer version`: the crate version, the commit, this binary's BPF object build, and what is
/// pinned (nothing, in a fresh bpffs).
#[test]
fn version_names_the_commit_and_the_builds() {
    let Some(_serial) = native() else { return };
    let ns = Namespace::new(true);
    let version = ns.ok(&["version"]);
    let lines: Vec<&str> = version.lines().collect();
    assert_eq!(lines.len(), 4, "{version}");
    assert!(lines[0].starts_with("enforcer 0."), "{version}");
    let commit = lines[1].strip_prefix("commit      ").expect("commit line");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| text(&out.stdout).trim().to_owned());
    match head {
        // The binary may be a commit behind the tree while a change is being made.
        Some(head) => assert!(
            commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{commit} (HEAD is {head})"
        ),
        None => assert_eq!(commit, "unknown"),
    }
    let build = lines[2]
        .strip_prefix("bpf object  build ")
        .expect("bpf object line");
    assert!(
        build.len() == 16 && build.bytes().all(|b| b.is_ascii_hexdigit()),
        "{version}"
    );
    assert_eq!(lines[3], "pinned      none", "{version}");
}

/// A directory under the temporary directory, removed on drop (a failed test included).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = env::temp_dir().join(format!("{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("mkdir {}: {err}", dir.display()));
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
