//! Workload arming with real container runtimes: Debian's `runc` and `crun` (put into the VM by
//! xtask) run a busybox container whose process holds CAP_SYS_ADMIN and CAP_SYS_TIME and has no
//! seccomp profile, so only the enforcer stands between it and mount, keyctl and settime.
//!
//! Each container runs a shell script as its entrypoint; the script runs the probe (copied into
//! the rootfs) and writes its JSON reports into `/out`, a directory bound from the test's bundle.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    harness::{
        CGROUP_ROOT, Cgroup, ClockGuard, Tail, enforcer, enforcer_ok, listed, probe_bin,
        wall_seconds,
    },
    matrix::{EPERM, TARGET_TIME},
};

/// How long a container may take to start and run its script under TCG.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
pub enum Runtime {
    Runc,
    Crun,
}

impl Runtime {
    fn bin(self) -> &'static str {
        match self {
            Self::Runc => "/usr/sbin/runc",
            Self::Crun => "/usr/bin/crun",
        }
    }

    fn command(self) -> Command {
        assert!(
            Path::new(self.bin()).is_file(),
            "{} is not in the VM (xtask puts Debian's runc and crun into the test initramfs)",
            self.bin()
        );
        Command::new(self.bin())
    }

    /// `exec` into a running container, waiting for the command; its stdout and stderr.
    fn exec(self, id: &str, args: &[&str]) -> Output {
        self.command()
            .arg("exec")
            .arg(id)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the runtime's exec")
    }
}

/// A bundle (busybox rootfs with the probe, config.json) and its container, deleted on drop.
pub struct Container {
    runtime: Runtime,
    pub id: String,
    pub dir: PathBuf,
    started: bool,
}

impl Container {
    /// Prepares the bundle; `script` is the entrypoint's shell script (`/bin/sh -c`).
    pub fn new(runtime: Runtime, id: &str, cgroup: &str, script: &str) -> Self {
        Self::with_args(runtime, id, cgroup, &["/bin/sh", "-c", script])
    }

    /// Prepares the bundle with `args` as the container's process.
    pub fn with_args(runtime: Runtime, id: &str, cgroup: &str, args: &[&str]) -> Self {
        let dir = PathBuf::from("/tmp/bundles").join(id);
        let _ = fs::remove_dir_all(&dir);
        let rootfs = dir.join("rootfs");
        for sub in [
            "bin",
            "lib64",
            "proc",
            "dev",
            "sys/fs/cgroup",
            "tmp",
            "mnt",
            "out",
        ] {
            fs::create_dir_all(rootfs.join(sub)).expect("mkdir rootfs");
        }
        fs::create_dir_all(dir.join("out")).expect("mkdir out");
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
        fs::copy(probe_bin(), rootfs.join("bin/probe")).expect("copy probe");
        for applet in ["sh", "sleep", "echo", "mkdir", "cat", "true", "touch"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("applet link");
        }
        let caps = json!([
            "CAP_SYS_ADMIN",
            "CAP_SYS_TIME",
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FOWNER",
            "CAP_KILL",
            "CAP_SETUID",
            "CAP_SETGID"
        ]);
        let config = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": { "uid": 0, "gid": 0 },
                "args": args,
                "env": ["PATH=/bin"],
                "cwd": "/",
                "capabilities": {
                    "bounding": caps, "effective": caps, "permitted": caps,
                    "inheritable": caps, "ambient": caps
                },
                "noNewPrivileges": false
            },
            "root": { "path": "rootfs", "readonly": false },
            "hostname": id,
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc" },
                {
                    "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
                },
                {
                    "destination": "/out", "type": "bind",
                    "source": dir.join("out").to_str().expect("utf-8"),
                    "options": ["rbind", "rw"]
                },
                {
                    "destination": "/sys/fs/cgroup", "type": "bind", "source": CGROUP_ROOT,
                    "options": ["rbind", "rw"]
                }
            ],
            "linux": {
                "cgroupsPath": cgroup,
                "namespaces": [
                    { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
                ]
            }
        });
        fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&config).expect("json"),
        )
        .expect("write config.json");
        Self {
            runtime,
            id: id.to_owned(),
            dir,
            started: false,
        }
    }

    /// `run --no-pivot -d` (pivot_root is impossible from an initramfs): true when the runtime
    /// says the container started. The runtime's output goes to `runtime.log` in the bundle.
    pub fn start(&mut self) -> bool {
        let log = fs::File::create(self.dir.join("runtime.log")).expect("log file");
        let status = self
            .runtime
            .command()
            .args(["run", "--no-pivot", "-d", "--bundle"])
            .arg(&self.dir)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .status()
            .expect("run the runtime");
        self.started = true;
        status.success()
    }

    /// Starts the container and fails the test unless it started.
    pub fn start_ok(&mut self) {
        assert!(
            self.start(),
            "{:?} did not start the container: {}",
            self.runtime,
            self.log()
        );
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("runtime.log")).unwrap_or_default()
    }

    pub fn out(&self, name: &str) -> PathBuf {
        self.dir.join("out").join(name)
    }

    /// [`Container::report`], or `None` when nothing was written within `timeout`.
    pub fn try_report(&self, name: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(text) = fs::read_to_string(self.out(name))
                && let Some(line) = text.lines().next()
            {
                return serde_json::from_str(line).ok();
            }
            thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Waits for the script to write `/out/<name>`, and parses it as the probe's report.
    pub fn report(&self, name: &str) -> Value {
        let path = self.out(name);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = fs::read_to_string(&path)
                && let Some(line) = text.lines().next()
            {
                return serde_json::from_str(line).unwrap_or_else(|err| {
                    panic!("/out/{name} is not a probe report ({err}): {text}")
                });
            }
            assert!(
                Instant::now() < deadline,
                "the container wrote no /out/{name} within {START_TIMEOUT:?}; runtime log: {}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        self.runtime.exec(&self.id, args)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.started {
            let _ = self
                .runtime
                .command()
                .args(["delete", "-f", &self.id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The script lines that try the three operations and report into `/out/<prefix>-<op>`.
fn attempts(prefix: &str) -> String {
    format!(
        "probe mount-tmpfs /mnt > /out/{prefix}-mount; \
         probe join-session {prefix}-ring > /out/{prefix}-keyctl; \
         probe settimeofday {TARGET_TIME} > /out/{prefix}-settime; "
    )
}

fn clock_moved() -> bool {
    wall_seconds() >= TARGET_TIME - 60
}

fn assert_denied(report: &Value, what: &str) {
    assert_eq!(report["errno"], EPERM, "{what} was not denied: {report}");
}

fn assert_all_denied(container: &Container, prefix: &str) {
    for op in ["mount", "keyctl", "settime"] {
        assert_denied(
            &container.report(&format!("{prefix}-{op}")),
            &format!("{prefix} {op}"),
        );
    }
}

/// Waits for a denial of `op` by a process in `cgroup` named `name`.
fn wait_denied_event(tail: &Tail, cgroup: &str, op: &str, name: &str) -> Value {
    tail.wait_for(|event| {
        event["cgroup"]["path"] == cgroup
            && event["enforcer"]["operation"] == op
            && event["event"]["outcome"] == "failure"
            && event["process"]["name"] == name
    })
}

/// No event names a process of the runtime (its setup ran unhindered and unreported).
fn assert_no_runtime_events(tail: &Tail) {
    thread::sleep(Duration::from_millis(500));
    let runtime_events: Vec<Value> = tail
        .events()
        .into_iter()
        .filter(|event| {
            let name = event["process"]["name"].as_str().unwrap_or("");
            name.starts_with("runc") || name.starts_with("crun")
        })
        .collect();
    assert!(
        runtime_events.is_empty(),
        "the runtime's setup was decided on: {runtime_events:?}"
    );
}

fn attach_exec(cgroup: &str) {
    enforcer_ok(&[
        "attach", "--cgroup", cgroup, "--deny", "all", "--arm", "exec",
    ]);
}

fn arm_of(cgroup: &Cgroup) -> String {
    listed(cgroup)["arm"].as_str().unwrap_or("").to_owned()
}

/// Policy on the pod-level parent before the container starts: the container starts (its
/// runtime's mounts and session keyring are not denied), its entrypoint's attempts are denied
/// with events.
fn pod_policy_before_start(runtime: Runtime, name: &str) {
    let _clock = ClockGuard::new();
    let pod = Cgroup::new(name);
    attach_exec(pod.arg());
    assert_eq!(arm_of(&pod), "exec");
    let tail = Tail::start(&[]);
    let cgroup = format!("/{name}/ctr");
    let mut container = Container::new(
        runtime,
        &format!("{name}-c"),
        &cgroup,
        &format!("{} echo > /out/done; exec sleep 600", attempts("entry")),
    );
    container.start_ok();
    assert_all_denied(&container, "entry");
    for op in ["mount", "keyctl", "settime"] {
        wait_denied_event(&tail, &cgroup, op, "probe");
    }
    assert!(!clock_moved(), "the clock moved");
    assert_no_runtime_events(&tail);
}

#[test]
fn runc_starts_under_a_pod_policy_and_its_entrypoint_is_denied() {
    pod_policy_before_start(Runtime::Runc, "rt-pod-runc");
}

#[test]
fn crun_starts_under_a_pod_policy_and_its_entrypoint_is_denied() {
    pod_policy_before_start(Runtime::Crun, "rt-pod-crun");
}

/// Policy attached to a running container: the process that was there before is subject at
/// once, exec sessions start, and the command they run is denied.
fn policy_on_a_running_container(runtime: Runtime, name: &str) {
    let _clock = ClockGuard::new();
    let _pod = Cgroup::new(name);
    let cgroup = format!("/{name}/ctr");
    let mut container = Container::new(
        runtime,
        &format!("{name}-c"),
        &cgroup,
        &format!(
            "echo > /out/up; while [ ! -e /out/go ]; do sleep 1; done; {} exec sleep 600",
            attempts("before")
        ),
    );
    container.start_ok();
    let deadline = Instant::now() + START_TIMEOUT;
    while !container.out("up").exists() {
        assert!(
            Instant::now() < deadline,
            "the container never came up: {}",
            container.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let ctr_cgroup = format!("{CGROUP_ROOT}{cgroup}");
    attach_exec(&ctr_cgroup);
    let tail = Tail::start(&[]);

    // The entrypoint, in the container since before the policy: subject at once.
    fs::write(container.out("go"), "").expect("go");
    assert_all_denied(&container, "before");

    // An exec session starts (the runtime joins the container and its session keyring), and
    // what it runs is denied.
    let target = TARGET_TIME.to_string();
    let session = container.exec(&["/bin/true"]);
    assert!(
        session.status.success(),
        "{runtime:?} exec failed under the policy: {}",
        String::from_utf8_lossy(&session.stderr)
    );
    for (op, args) in [
        ("mount", &["/bin/probe", "mount-tmpfs", "/mnt"][..]),
        ("keyctl", &["/bin/probe", "join-session", "exec-ring"][..]),
        ("settime", &["/bin/probe", "settimeofday", &target][..]),
    ] {
        let run = container.exec(args);
        assert!(
            run.status.success(),
            "{runtime:?} exec {op} failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let report: Value = serde_json::from_slice(&run.stdout).expect("probe JSON");
        assert_denied(&report, &format!("exec session {op}"));
        wait_denied_event(&tail, &cgroup, op, "probe");
    }
    assert!(!clock_moved(), "the clock moved");
    assert_no_runtime_events(&tail);
    enforcer_ok(&["detach", "--cgroup", &ctr_cgroup]);
    drop(container);
}

#[test]
fn runc_exec_sessions_work_under_a_policy_on_a_running_container() {
    policy_on_a_running_container(Runtime::Runc, "rt-run-runc");
}

#[test]
fn crun_exec_sessions_work_under_a_policy_on_a_running_container() {
    policy_on_a_running_container(Runtime::Crun, "rt-run-crun");
}

/// The workload cannot make itself exempt: moving itself into a child cgroup, out of every
/// policy and back in, forking and re-executing, it stays subject.
fn no_way_back(runtime: Runtime, name: &str) {
    let _clock = ClockGuard::new();
    let pod = Cgroup::new(name);
    attach_exec(pod.arg());
    let cgroup = format!("/{name}/ctr");
    let ctr = format!("/sys/fs/cgroup{cgroup}");
    let script = format!(
        "mkdir {ctr}/sub; echo $$ > {ctr}/sub/cgroup.procs; {moved} \
         echo $$ > /sys/fs/cgroup/cgroup.procs; echo $$ > {ctr}/sub/cgroup.procs; {back} \
         sh -c '{forked}'; \
         sh -c 'exec probe settimeofday {TARGET_TIME}' > /out/reexec-settime; \
         sh -c 'exec sh -c \"exec probe mount-tmpfs /mnt\"' > /out/reexec-mount; \
         echo > /out/done; exec sleep 600",
        moved = attempts("moved"),
        back = attempts("back"),
        forked = attempts("forked"),
    );
    let mut container = Container::new(runtime, &format!("{name}-c"), &cgroup, &script);
    container.start_ok();
    for prefix in ["moved", "back", "forked"] {
        assert_all_denied(&container, prefix);
    }
    assert_denied(&container.report("reexec-settime"), "re-exec settime");
    assert_denied(&container.report("reexec-mount"), "re-exec mount");
    assert!(!clock_moved(), "the clock moved");
    let _ = fs::remove_dir(format!("{ctr}/sub"));
}

#[test]
fn runc_workload_stays_subject_after_moves_forks_and_execs() {
    no_way_back(Runtime::Runc, "rt-back-runc");
}

#[test]
fn crun_workload_stays_subject_after_moves_forks_and_execs() {
    no_way_back(Runtime::Crun, "rt-back-crun");
}

/// `--arm immediate` holds the runtime's own setup to the policy: the container does not start,
/// and the denial is reported. The entrypoint (`sleep`) tries nothing guarded, so every event is
/// the runtime's (named `runc:[2:INIT]` by runc; crun's process keeps the name of the memfd copy
/// of itself it runs, which differs between kernels).
fn immediate_denies_setup(runtime: Runtime, name: &str) {
    let pod = Cgroup::new(name);
    enforcer_ok(&[
        "attach",
        "--cgroup",
        pod.arg(),
        "--deny",
        "all",
        "--arm",
        "immediate",
    ]);
    assert_eq!(arm_of(&pod), "immediate");
    let tail = Tail::start(&[]);
    let cgroup = format!("/{name}/ctr");
    let mut container = Container::new(runtime, &format!("{name}-c"), &cgroup, "exec sleep 600");
    assert!(
        !container.start(),
        "{runtime:?} started the container although its setup was denied: {}",
        container.log()
    );
    let event = tail.wait_for(|event| {
        event["enforcer"]["policy_cgroup_id"] == pod.id() && event["event"]["outcome"] == "failure"
    });
    assert!(
        ["mount", "keyctl"].contains(&event["enforcer"]["operation"].as_str().unwrap_or("")),
        "{event}"
    );
    assert_ne!(event["process"]["name"], "sleep", "{event}");
}

#[test]
fn runc_setup_is_denied_under_arm_immediate() {
    immediate_denies_setup(Runtime::Runc, "rt-imm-runc");
}

#[test]
fn crun_setup_is_denied_under_arm_immediate() {
    immediate_denies_setup(Runtime::Crun, "rt-imm-crun");
}

#[test]
fn arming_defaults_to_exec_for_container_cgroups_only() {
    let plain = Cgroup::new("rt-plain");
    enforcer_ok(&["attach", "--cgroup", plain.arg(), "--deny", "settime"]);
    assert_eq!(arm_of(&plain), "immediate");
    let kubepods = Cgroup::new("kubepods");
    let pod = kubepods.child("pod1234abcd-5678-4ef0-9abc-def012345678");
    enforcer_ok(&["attach", "--cgroup", pod.arg(), "--deny", "settime"]);
    assert_eq!(arm_of(&pod), "exec");
    let run = enforcer(&[
        "attach",
        "--cgroup",
        plain.arg(),
        "--deny",
        "settime",
        "--arm",
        "later",
    ]);
    assert_eq!(run.code(), Some(2), "{run:?}");
}

/// A process started outside and moved in by the test (a writer outside every policy, as a
/// runtime moves its init): under `--arm exec` it is setup until it execs, so its operation
/// without an exec is permitted, silently; one that execs first, directly or in a child, is
/// denied. Re-attaching the policy makes the processes already inside subject at once.
#[test]
fn a_process_moved_in_from_outside_is_setup_until_it_execs() {
    let _clock = ClockGuard::new();
    let cgroup = Cgroup::new("rt-moved");
    attach_exec(cgroup.arg());
    let tail = Tail::start(&[]);
    let target = TARGET_TIME.to_string();

    let setup = Waiting::spawn(&["--wait", "join-session", "rt-moved-ring"], &cgroup);
    assert_eq!(
        setup.go()["ret"].as_i64().map(|r| r > 0),
        Some(true),
        "setup was denied"
    );

    let execs = Waiting::shell(
        &format!("read x; exec {} settimeofday {target}", probe_bin()),
        &cgroup,
    );
    assert_denied(&execs.go(), "after an exec");
    let forks = Waiting::shell(
        &format!("read x; {} mount-tmpfs /mnt", probe_bin()),
        &cgroup,
    );
    assert_denied(&forks.go(), "in a child after fork and exec");

    // Moved in, then the policy is attached again: subject at once.
    let stale = Waiting::spawn(&["--wait", "join-session", "rt-moved-ring2"], &cgroup);
    attach_exec(cgroup.arg());
    assert_denied(&stale.go(), "after re-attach");

    // --arm immediate: the moved-in process is subject from the start.
    enforcer_ok(&[
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--deny",
        "all",
        "--arm",
        "immediate",
    ]);
    let immediate = Waiting::spawn(&["--wait", "join-session", "rt-moved-ring3"], &cgroup);
    assert_denied(&immediate.go(), "under --arm immediate");

    assert!(!clock_moved(), "the clock moved");
    thread::sleep(Duration::from_millis(500));
    let keyctl_denials = tail
        .events()
        .into_iter()
        .filter(|e| e["cgroup"]["path"] == "/rt-moved" && e["enforcer"]["operation"] == "keyctl")
        .count();
    assert_eq!(
        keyctl_denials, 2,
        "only the subject processes' attempts are reported"
    );
}

/// No way back for a process that is moved: a subject process moved by a writer outside every
/// policy (root on the host) into another covered cgroup stays subject.
#[test]
fn a_subject_process_moved_between_covered_cgroups_stays_subject() {
    let pod = Cgroup::new("rt-between");
    let (a, b) = (pod.child("a"), pod.child("b"));
    attach_exec(pod.arg());
    let mut waiting = Waiting::shell(
        &format!(
            "read x; exec {} --wait join-session rt-between-ring",
            probe_bin()
        ),
        &a,
    );
    // The shell execs the probe (subject from then on), which waits again.
    waiting.send();
    let comm = format!("/proc/{}/comm", waiting.child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(&comm).unwrap_or_default().trim() != "probe" {
        assert!(Instant::now() < deadline, "the shell never ran the probe");
        thread::sleep(Duration::from_millis(50));
    }
    fs::write(b.path.join("cgroup.procs"), waiting.child.id().to_string()).expect("move");
    assert_denied(&waiting.go(), "after the move between covered cgroups");
}

/// A process blocked on its stdin, moved into a cgroup by the test.
struct Waiting {
    child: std::process::Child,
}

impl Waiting {
    fn spawn(args: &[&str], cgroup: &Cgroup) -> Self {
        Self::start(Command::new(probe_bin()).args(args), cgroup)
    }

    fn shell(script: &str, cgroup: &Cgroup) -> Self {
        Self::start(Command::new("/bin/sh").args(["-c", script]), cgroup)
    }

    fn start(command: &mut Command, cgroup: &Cgroup) -> Self {
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        fs::write(cgroup.path.join("cgroup.procs"), child.id().to_string()).expect("move in");
        Self { child }
    }

    /// Sends it one line.
    fn send(&mut self) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("write");
        stdin.flush().expect("flush");
    }

    /// Lets it act; its probe report.
    fn go(mut self) -> Value {
        self.send();
        drop(self.child.stdin.take());
        let output = self.child.wait_with_output().expect("wait");
        serde_json::from_slice(&output.stdout).expect("probe JSON")
    }
}

/// `attach --container` finds the container's cgroup in its runtime's state (by a unique prefix
/// of the id), arms at exec by default, and exec sessions keep working while their commands are
/// denied.
fn attach_by_container(runtime: Runtime, name: &str) -> Container {
    let cgroup = format!("/{name}/ctr");
    let mut container = Container::new(
        runtime,
        &format!("{name}-0123456789"),
        &cgroup,
        "exec sleep 600",
    );
    container.start_ok();
    let out = enforcer_ok(&[
        "attach",
        "--container",
        &format!("{name}-01234"),
        "--deny",
        "all",
    ]);
    assert!(
        out.contains(&format!("attached {cgroup} ")) && out.contains("arm=exec"),
        "{out}"
    );
    let run = container.exec(&["/bin/probe", "join-session", "by-id-ring"]);
    assert!(
        run.status.success(),
        "{runtime:?} exec failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_slice(&run.stdout).expect("probe JSON");
    assert_denied(&report, "exec session keyctl");
    container
}

fn detach_container_cgroup(name: &str) {
    enforcer_ok(&["detach", "--cgroup", &format!("{CGROUP_ROOT}/{name}/ctr")]);
}

#[test]
fn runc_attach_by_container_id() {
    let name = "rt-id-runc";
    let _pod = Cgroup::new(name);
    let container = attach_by_container(Runtime::Runc, name);
    let mut other = Container::new(
        Runtime::Runc,
        &format!("{name}-0123999"),
        &format!("/{name}/ctr2"),
        "exec sleep 600",
    );
    other.start_ok();
    for (id, code) in [("rt-id-nosuch", 10), (&format!("{name}-0123")[..], 11)] {
        let run = enforcer(&["attach", "--container", id, "--deny", "all"]);
        assert_eq!(run.code(), Some(code), "{id}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "one line: {:?}", run.stderr);
    }
    let run = enforcer(&[
        "attach",
        "--container",
        "x",
        "--cgroup",
        "/",
        "--deny",
        "all",
    ]);
    assert_eq!(run.code(), Some(2), "{run:?}");
    detach_container_cgroup(name);
    drop((container, other));
}

#[test]
fn crun_attach_by_container_id() {
    let name = "rt-id-crun";
    let _pod = Cgroup::new(name);
    let container = attach_by_container(Runtime::Crun, name);
    detach_container_cgroup(name);
    drop(container);
}
