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
    let output = Command::new(bin("ENFORCER_BIN", "/bin/enforcer"))
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
    let mut command = Command::new(bin("PROBE_BIN", "/bin/probe"));
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
        let mut child = Command::new(bin("ENFORCER_BIN", "/bin/enforcer"))
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
