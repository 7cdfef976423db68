//! Helpers for the VM tests: run the CLI, make cgroups, run the probe, follow events.
use std::{
    env, fs,
    io::{BufRead, BufReader},
    os::unix::{fs::MetadataExt, process::ExitStatusExt},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long to wait for an event: TCG is slow, and the tail drains on a 50 ms timer.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

fn bin(var: &str, default: &str) -> String {
    env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// The enforcer binary under test (`ENFORCER_BIN`).
pub fn enforcer_bin() -> String {
    bin("ENFORCER_BIN", "/bin/enforcer")
}

/// The probe helper (`PROBE_BIN`).
pub fn probe_bin() -> String {
    bin("PROBE_BIN", "/bin/probe")
}

/// Result of one `enforcer` run.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

pub fn enforcer(args: &[&str]) -> Run {
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

/// Runs `enforcer` and fails the test unless it succeeds.
pub fn enforcer_ok(args: &[&str]) -> String {
    let run = enforcer(args);
    assert!(run.status.success(), "enforcer {args:?} failed: {run:?}");
    run.stdout
}

/// A cgroup made for one test; its policy is detached and the directory removed on drop.
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn new(name: &str) -> Self {
        Self::at(PathBuf::from(CGROUP_ROOT).join(name))
    }

    pub fn child(&self, name: &str) -> Self {
        Self::at(self.path.join(name))
    }

    fn at(path: PathBuf) -> Self {
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
        Self { path }
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    pub fn id(&self) -> u64 {
        fs::metadata(&self.path).expect("stat cgroup").ino()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = enforcer(&["detach", "--cgroup", self.arg()]);
        let _ = fs::remove_dir(&self.path);
    }
}

/// What the probe reported, or how it died.
#[derive(Debug)]
pub struct Probe {
    pub status: ExitStatus,
    pub report: Option<Value>,
}

impl Probe {
    pub fn errno(&self) -> i64 {
        self.report()
            .get("errno")
            .and_then(Value::as_i64)
            .expect("errno")
    }

    pub fn ret(&self) -> i64 {
        self.report()
            .get("ret")
            .and_then(Value::as_i64)
            .expect("ret")
    }

    pub fn pid(&self) -> u64 {
        self.report()
            .get("pid")
            .and_then(Value::as_u64)
            .expect("pid")
    }

    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    fn report(&self) -> &Value {
        self.report
            .as_ref()
            .unwrap_or_else(|| panic!("probe printed nothing: {:?}", self.status))
    }
}

/// Runs the probe, inside `cgroup` if given.
pub fn probe(cgroup: Option<&Cgroup>, args: &[&str]) -> Probe {
    let mut command = Command::new(probe_bin());
    if let Some(cgroup) = cgroup {
        command.args(["--cgroup", cgroup.arg()]);
    }
    let output = command.args(args).output().expect("run probe");
    let stdout = String::from_utf8_lossy(&output.stdout);
    Probe {
        status: output.status,
        report: stdout
            .lines()
            .next()
            .map(|line| serde_json::from_str(line).expect("probe JSON")),
    }
}

/// A running `enforcer tail --json`, collecting every line it prints.
pub struct Tail {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tail {
    pub fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(enforcer_bin())
            .args(["tail", "--json"])
            .args(extra)
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
        // Let it open the ring buffer before the test acts.
        thread::sleep(Duration::from_millis(300));
        Self { child, lines }
    }

    /// Waits for the first event that `matches`, parsed.
    pub fn wait_for(&self, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(event) = self.events().into_iter().find(|event| matches(event)) {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "no matching event within {EVENT_TIMEOUT:?}; tail printed: {:?}",
                self.lines.lock().expect("lines")
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Events of one process, after giving the tail time to drain.
    pub fn settled_events_of(&self, pid: u64) -> Vec<Value> {
        thread::sleep(Duration::from_millis(500));
        self.events()
            .into_iter()
            .filter(|event| event["process"]["pid"].as_u64() == Some(pid))
            .collect()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wall-clock seconds now.
pub fn wall_seconds() -> i64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
        .expect("clock_gettime")
        .tv_sec()
}

/// Puts the wall clock back where it was when created, however tests moved it.
pub struct ClockGuard {
    wall: i64,
    monotonic: Instant,
}

impl ClockGuard {
    pub fn new() -> Self {
        Self {
            wall: wall_seconds(),
            monotonic: Instant::now(),
        }
    }
}

impl Drop for ClockGuard {
    fn drop(&mut self) {
        let now = self.wall + self.monotonic.elapsed().as_secs() as i64;
        let ts = nix::sys::time::TimeSpec::new(now, 0);
        let _ = nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts);
    }
}

/// The `enforcer list --json` counters of one cgroup's operation: (audited, denied, killed).
pub fn counters(cgroup: &Cgroup, op: &str) -> (u64, u64, u64) {
    let entry = listed(cgroup);
    let counts = &entry["operations"][op];
    let get = |key: &str| counts[key].as_u64().unwrap_or(0);
    (get("audited"), get("denied"), get("killed"))
}

/// Events of `cgroup`'s policy that its event budget suppressed (exact, from `list --json`).
pub fn suppressed(cgroup: &Cgroup) -> u64 {
    listed(cgroup)["events_suppressed"]
        .as_u64()
        .expect("events_suppressed")
}

/// The `enforcer list --json` entry of `cgroup`'s policy.
pub fn listed(cgroup: &Cgroup) -> Value {
    let list: Value = serde_json::from_str(&enforcer_ok(&["list", "--json"])).expect("list JSON");
    list["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|p| p["cgroup_id"] == cgroup.id())
        .cloned()
        .unwrap_or_else(|| panic!("{} is not listed: {list}", cgroup.arg()))
}

/// A scratch directory under /tmp with `src` and `dst` subdirectories for mount tests. Anything
/// mounted below it is detached on drop, so a test that let a mount through leaves nothing behind.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = PathBuf::from("/tmp").join(name);
        Self::unmount_below(&dir);
        let _ = fs::remove_dir_all(&dir);
        for sub in ["src", "dst", "dst/old"] {
            fs::create_dir_all(dir.join(sub)).expect("mkdir scratch");
        }
        Self { dir }
    }

    pub fn path(&self, sub: &str) -> String {
        self.dir.join(sub).to_str().expect("utf-8").to_owned()
    }

    /// Mounts a tmpfs on `sub` from the test process (outside every policy).
    pub fn mount_tmpfs(&self, sub: &str) {
        nix::mount::mount(
            Some("none"),
            self.dir.join(sub).as_path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount tmpfs for the test");
    }

    pub fn make_shared(&self, sub: &str) {
        nix::mount::mount(
            None::<&str>,
            self.dir.join(sub).as_path(),
            None::<&str>,
            nix::mount::MsFlags::MS_SHARED,
            None::<&str>,
        )
        .expect("make shared");
    }

    /// The mountinfo line of the mount on `sub`, if one is there.
    pub fn mount_line(&self, sub: &str) -> Option<String> {
        let target = self.path(sub);
        fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .rfind(|line| line.split(' ').nth(4) == Some(target.as_str()))
            .map(str::to_owned)
    }

    pub fn is_mounted(&self, sub: &str) -> bool {
        self.mount_line(sub).is_some()
    }

    /// Read-only per mount or per superblock.
    pub fn is_read_only(&self, sub: &str) -> bool {
        self.mount_line(sub).is_some_and(|line| {
            let (left, right) = line.split_once(" - ").unwrap_or((&line, ""));
            let mount_opts = left.split(' ').nth(5).unwrap_or("");
            let super_opts = right.split(' ').nth(2).unwrap_or("");
            [mount_opts, super_opts]
                .iter()
                .any(|opts| opts.split(',').any(|o| o == "ro"))
        })
    }

    pub fn is_shared(&self, sub: &str) -> bool {
        self.mount_line(sub)
            .is_some_and(|line| line.contains(" shared:"))
    }

    fn unmount_below(dir: &std::path::Path) {
        let prefix = dir.to_str().unwrap_or("/nonexistent").to_owned();
        for _ in 0..8 {
            let mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
                .filter(|point| point.starts_with(&prefix))
                .collect();
            if mounts.is_empty() {
                return;
            }
            for point in mounts.iter().rev() {
                let _ = nix::mount::umount2(point.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        Self::unmount_below(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The /proc/keys line of the key with this description, if the kernel has one.
pub fn key_line(description: &str) -> Option<String> {
    fs::read_to_string("/proc/keys")
        .expect("/proc/keys")
        .lines()
        .find(|line| {
            line.split_whitespace()
                .nth(8)
                .is_some_and(|desc| desc.trim_end_matches(':') == description)
        })
        .map(str::to_owned)
}

/// Creates a `user` key in the user keyring from outside every policy; returns its serial.
pub fn make_key(description: &str, payload: &str) -> i64 {
    let made = probe(None, &["add-key", description, payload]);
    assert!(made.ret() > 0, "cannot create key {description}: {made:?}");
    made.ret()
}

/// Starts `enforcer tail --json --cgroup <cgroup>` with its stdout piped, and gives it a moment to
/// open the event source before the caller acts.
pub fn spawn_json_tail(cgroup: &Cgroup) -> Child {
    let tail = Command::new(enforcer_bin())
        .args(["tail", "--json", "--cgroup", cgroup.arg()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tail");
    thread::sleep(Duration::from_millis(300));
    tail
}

/// Starts a probe in `cgroup` that calls settimeofday(NULL, NULL) `attempts` times.
pub fn spawn_storm(cgroup: &Cgroup, attempts: u64) -> Child {
    Command::new(probe_bin())
        .args([
            "--cgroup",
            cgroup.arg(),
            "settime-loop",
            &attempts.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start storm")
}
