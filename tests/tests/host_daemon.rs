//! `enforcer daemon --layer syscall` natively on the host, which refuses BPF LSM but runs raw
//! tracepoints: the daemon a DaemonSet runs on such a node serves its metrics and probes,
//! carries out syscall-layer policy changes for the CLI, and fans every event out to its stdout
//! and to several tails at once.
//!
//! Each test works in a mount namespace of its own, with a fresh bpffs on /sys/fs/bpf and a
//! tmpfs on /run, so its pins, sockets and locks are its own (a daemon running on the host is
//! untouched). The syscall layer's programs it attaches run machine-wide, but only for the
//! test's own cgroup. The only call made is `settimeofday(NULL, NULL)`, which changes nothing.
mod common;

use std::{
    env, fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use common::{cgroup_root, enforcer_bin, text};

const TIMEOUT: Duration = Duration::from_secs(15);
/// Exit codes (main.rs): BPF LSM unavailable, and `--deny` with `--layer syscall`.
const EXIT_CANNOT_ENFORCE: i32 = 5;
const EXIT_NOT_IN_LAYER: i32 = 12;

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the test body as root with the tests serialised, or says why it is skipped.
fn native() -> Option<MutexGuard<'static, ()>> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the daemon host tests need root (run `cargo xtask test` as root)");
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

/// A test cgroup directly under the cgroup v2 mount, removed on drop (its policy goes with the
/// namespace's bpffs).
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Self {
        let path = cgroup_root().join(name);
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
        let _ = fs::remove_dir(&self.0);
    }
}

/// A mount namespace kept alive by a `sleep`, with a fresh bpffs on /sys/fs/bpf and a tmpfs on
/// /run. Commands run in it through `nsenter`.
struct Namespace {
    holder: Child,
}

impl Namespace {
    fn new() -> Self {
        let script = "while mountpoint -q /sys/fs/bpf; do umount /sys/fs/bpf || exit 1; done; \
                      mount -t bpf bpf /sys/fs/bpf && mount -t tmpfs tmpfs /run || exit 1; \
                      echo ready; exec sleep infinity";
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
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

    /// `enforcer ARGS` in the namespace.
    fn enforcer(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("--target")
            .arg(self.holder.id().to_string())
            .arg("--mount")
            .arg("--")
            .arg(enforcer_bin())
            .args(args);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.enforcer(args).output().expect("run enforcer")
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // The namespace, its bpffs and every pin in it go with its last process.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The lines a child writes to stdout, collected by a thread.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn collect(stream: impl Read + Send + 'static) -> Self {
        let lines = Self::default();
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                sink.0.lock().expect("lines").push(line);
            }
        });
        lines
    }

    fn json(&self) -> Vec<Value> {
        self.0
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits for a JSON line that `matches`.
    fn wait_for(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        wait(what, || self.json().into_iter().find(&matches)).unwrap_or_else(|| {
            panic!(
                "no {what} within {TIMEOUT:?}; got: {:?}",
                self.0.lock().expect("lines")
            )
        })
    }
}

/// Polls `found` until it answers or [`TIMEOUT`] passes.
fn wait<T>(_what: &str, mut found: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = found() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A child killed and reaped on drop (a failed test included).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on the daemon's metrics listener: (status code, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|err| panic!("connect {addr}: {err}"));
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}

/// The value of the one sample of `metrics` whose line starts with `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[test]
fn a_syscall_layer_daemon_serves_probes_metrics_and_two_tails() {
    let Some(_serial) = native() else { return };
    let ns = Namespace::new();
    let cgroup = Cgroup::new("enforcer-host-daemon");

    let mut daemon = ns
        .enforcer(&["daemon", "--layer", "syscall", "--metrics", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let daemon_out = Lines::collect(daemon.stdout.take().expect("daemon stdout"));
    let mut stderr = BufReader::new(daemon.stderr.take().expect("daemon stderr"));
    let daemon = Running(daemon);
    let mut banner = String::new();
    while !banner.contains("daemon running") {
        let mut line = String::new();
        if stderr.read_line(&mut line).expect("daemon stderr") == 0 {
            panic!("the daemon stopped: {banner}");
        }
        banner += &line;
    }
    let daemon_err = Lines::collect(stderr);
    assert!(banner.contains("syscall layer only"), "{banner}");
    let addr = banner
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address: {banner}"))
        .to_owned();

    assert_eq!(get(&addr, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(&addr, "/readyz"), (200, "ready\n".to_owned()));
    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("enforcer_build_info{version=\""),
        "{metrics}"
    );
    assert_eq!(get(&addr, "/nothing").0, 404);

    // Two tails read the daemon's stream at once.
    let tails: Vec<(Running, Lines)> = (0..2)
        .map(|_| {
            let mut tail = ns
                .enforcer(&["tail", "--json", "--cgroup", cgroup.arg()])
                .stdout(Stdio::piped())
                .spawn()
                .expect("start tail");
            let lines = Lines::collect(tail.stdout.take().expect("tail stdout"));
            (Running(tail), lines)
        })
        .collect();
    wait("two readers", || {
        (sample(&get(&addr, "/metrics").1, "enforcer_readers ") == Some(2.0)).then_some(())
    })
    .expect("the daemon never counted two readers");

    // Kubernetes filters need the node agent's names, which this daemon has not.
    let filtered = ns.run(&["tail", "--namespace", "shop"]);
    assert!(!filtered.status.success());
    assert!(
        text(&filtered.stderr).contains("run `enforcer daemon --kubernetes`"),
        "{}",
        text(&filtered.stderr)
    );

    // Through the daemon: a deny is refused before it gets there; an audit is set.
    let deny = ns.run(&[
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--layer",
        "syscall",
        "--deny",
        "settime",
    ]);
    assert_eq!(
        deny.status.code(),
        Some(EXIT_NOT_IN_LAYER),
        "{}",
        text(&deny.stderr)
    );
    let audit = ns.run(&[
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--layer",
        "syscall",
        "--audit",
        "settime",
    ]);
    assert!(audit.status.success(), "{}", text(&audit.stderr));
    daemon_out.wait_for("the attach's state record", |record| {
        record["event"]["kind"] == "state" && record["cgroup"]["id"] == cgroup.id()
    });

    // settimeofday(NULL, NULL) changes nothing; audited, it is reported everywhere.
    let probe = Command::new(probe_bin())
        .args(["--cgroup", cgroup.arg(), "raw", "164", "0", "0"])
        .output()
        .expect("run probe");
    assert!(probe.status.success(), "{}", text(&probe.stderr));
    let settime = |event: &Value| {
        event["cgroup"]["id"] == cgroup.id() && event["enforcer"]["operation"] == "settime"
    };
    for (n, (_, lines)) in tails.iter().enumerate() {
        let event = lines.wait_for(&format!("tail {n}'s settime event"), settime);
        assert_eq!(event["enforcer"]["action"], "audit");
        assert_eq!(event["enforcer"]["source"], "syscall");
    }
    daemon_out.wait_for("the daemon's settime event", settime);

    let (_, metrics) = get(&addr, "/metrics");
    let id = cgroup.id();
    let series = format!(
        "enforcer_decisions_total{{cgroup_id=\"{id}\",cgroup_path=\"/enforcer-host-daemon\",operation=\"settime\",action=\"audit\"}}"
    );
    assert!(
        sample(&metrics, &series).is_some_and(|n| n >= 1.0),
        "{series} in {metrics}"
    );
    assert!(sample(&metrics, "enforcer_events_delivered_total ").is_some_and(|n| n >= 1.0));

    // A SIGTERM stops the daemon cleanly; the policy stays.
    let mut daemon = daemon;
    kill(Pid::from_raw(daemon.0.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = wait("the daemon to stop", || daemon.0.try_wait().expect("wait"))
        .expect("the daemon did not stop");
    assert!(
        status.success(),
        "{:?}",
        daemon_err.0.lock().expect("lines")
    );
    let list: Value =
        serde_json::from_slice(&ns.run(&["list", "--json"]).stdout).expect("list JSON");
    assert!(list.to_string().contains(&id.to_string()), "{list}");
}

/// The default layer needs BPF LSM: where the kernel refuses it, the daemon stops with the
/// refusal's exit code and names `--layer syscall`.
#[test]
fn the_lsm_daemon_names_the_syscall_layer_where_bpf_lsm_is_refused() {
    let Some(_serial) = native() else { return };
    let ns = Namespace::new();
    let mut daemon = Running(
        ns.enforcer(&["daemon"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon"),
    );
    let Some(status) = wait("the daemon to stop", || daemon.0.try_wait().expect("wait")) else {
        eprintln!("SKIPPED: BPF LSM works on this kernel, so the LSM daemon runs");
        return;
    };
    let mut stderr = String::new();
    daemon
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(EXIT_CANNOT_ENFORCE), "{stderr}");
    assert!(
        stderr.contains("enforcer daemon --layer syscall"),
        "{stderr}"
    );
}
