//! `enforcer daemon`: fan-out to several tails and to its stdout, exact metrics, adoption of the
//! pins across a SIGKILL with no gap in enforcement, one daemon at a time, and enforcement left in
//! place by SIGTERM. Every daemon a test starts is stopped by its guard, so the tests after these,
//! which read the ring buffer through `tail`, are not starved.
use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    os::unix::{fs::MetadataExt, fs::PermissionsExt, net::UnixStream},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    harness::{
        Cgroup, Tail, counters, enforcer, enforcer_bin, enforcer_ok, probe, probe_bin,
        spawn_json_tail, spawn_storm, suppressed,
    },
    matrix::EPERM,
};

const SOCKET: &str = "/run/enforcer/events.sock";
const LOCK: &str = "/run/enforcer/daemon.lock";
const LINKS: &str = "/sys/fs/bpf/enforcer/v1/links";
/// The documented exit codes of a second daemon and of a tail whose daemon went away.
const ALREADY_RUNNING: i32 = 8;
const DAEMON_GONE: i32 = 9;
/// TCG is slow: generous, but bounded.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon gets to say it runs: a first start loads and verifies every program, tens of
/// seconds under TCG on a busy host.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Lines a child prints on one stream, collected by a thread.
type Lines = Arc<Mutex<Vec<String>>>;

fn collect(stream: impl Read + Send + 'static) -> Lines {
    let lines: Lines = Arc::default();
    let sink = Arc::clone(&lines);
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });
    lines
}

fn parsed(lines: &Lines) -> Vec<Value> {
    lines
        .lock()
        .expect("lines")
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, signal);
}

/// A running `enforcer daemon`; stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    stdout: Lines,
    stderr: Lines,
}

impl Daemon {
    /// Starts a daemon and waits for its "running" line.
    pub(crate) fn start(extra: &[&str]) -> Self {
        Self::start_with(&[], extra)
    }

    /// [`Daemon::start`] with global options before the subcommand (e.g. `--bpf-object`).
    pub(crate) fn start_with(global: &[&str], extra: &[&str]) -> Self {
        let mut child = Command::new(enforcer_bin())
            .args(global)
            .arg("daemon")
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        let mut daemon = Self {
            child,
            stdout,
            stderr,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !daemon.stderr().contains("daemon running") {
            if let Some(status) = daemon.child.try_wait().expect("try_wait") {
                panic!("the daemon exited at start ({status}): {}", daemon.stderr());
            }
            assert!(Instant::now() < deadline, "the daemon did not start");
            thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").join("\n")
    }

    /// JSON lines the daemon wrote to stdout.
    pub(crate) fn events(&self) -> Vec<Value> {
        parsed(&self.stdout)
    }

    pub(crate) fn kill(&mut self) {
        signal(&self.child, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    pub(crate) fn terminate(&mut self) -> ExitStatus {
        signal(&self.child, nix::sys::signal::Signal::SIGTERM);
        wait_exit(&mut self.child, TIMEOUT).expect("the daemon ignored SIGTERM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(&self.child, nix::sys::signal::Signal::SIGTERM);
            if wait_exit(&mut self.child, Duration::from_secs(10)).is_none() {
                self.kill();
            }
        }
    }
}

/// An `enforcer tail --json` whose stderr and exit status the test reads too.
struct StreamTail {
    child: Child,
    stdout: Lines,
    stderr: Lines,
}

impl StreamTail {
    fn start(cgroup: &Cgroup) -> Self {
        let mut child = Command::new(enforcer_bin())
            .args(["tail", "--json", "--cgroup", cgroup.arg()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tail");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        // Let it connect before the test acts.
        thread::sleep(Duration::from_millis(300));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn events_of(&self, pid: u64) -> Vec<Value> {
        parsed(&self.stdout)
            .into_iter()
            .filter(|event| event["process"]["pid"].as_u64() == Some(pid))
            .collect()
    }

    fn dropped(&self) -> u64 {
        parsed(&self.stdout)
            .iter()
            .filter(|record| record["event"]["action"] == "events-dropped")
            .filter_map(|record| record["enforcer"]["dropped"].as_u64())
            .sum()
    }
}

impl Drop for StreamTail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Link id and program id behind each link pin, by pin name, read with BPF_OBJ_GET and
/// BPF_OBJ_GET_INFO_BY_FD: a reload would show new ids.
fn link_ids() -> BTreeMap<String, (u32, u32)> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut ids = BTreeMap::new();
    for entry in fs::read_dir(LINKS).expect("link pins").flatten() {
        let path = CString::new(entry.path().to_str().expect("utf-8")).expect("path");
        let get = ObjGet {
            pathname: path.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        };
        // SAFETY: `get` is a valid BPF_OBJ_GET attribute; the kernel reads only its size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET,
                &get as *const ObjGet,
                size_of::<ObjGet>(),
            )
        };
        assert!(
            fd >= 0,
            "BPF_OBJ_GET {path:?}: {}",
            std::io::Error::last_os_error()
        );
        // struct bpf_link_info starts with type, id, prog_id; the rest stays zero for the kernel.
        let mut info = [0u32; 16];
        let attr = GetInfo {
            bpf_fd: fd as u32,
            info_len: size_of_val(&info) as u32,
            info: info.as_mut_ptr() as u64,
        };
        // SAFETY: `info` is a writable buffer of `info_len` bytes.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET_INFO_BY_FD,
                &attr as *const GetInfo,
                size_of::<GetInfo>(),
            )
        };
        let err = std::io::Error::last_os_error();
        // SAFETY: `fd` came from BPF_OBJ_GET above and is ours.
        unsafe { libc::close(fd as i32) };
        assert_eq!(ret, 0, "BPF_OBJ_GET_INFO_BY_FD: {err}");
        ids.insert(
            entry.file_name().to_string_lossy().into_owned(),
            (info[1], info[2]),
        );
    }
    ids
}

/// Brings the loopback interface up (the VM's /init leaves it down) for the metrics listener.
fn loopback_up() {
    // SAFETY: plain socket/ioctl calls on a zeroed `ifreq` naming "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0, "socket");
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
            *dst = *src as libc::c_char;
        }
        assert_eq!(
            libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req),
            0,
            "SIOCGIFFLAGS"
        );
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &req), 0, "SIOCSIFFLAGS");
        libc::close(fd);
    }
}

/// The body of `GET /metrics`.
fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the answer");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[test]
fn two_tails_and_stdout_each_see_every_event_of_a_burst() {
    const BURST: u64 = 200;
    let cgroup = Cgroup::new("dm-fanout");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let daemon = Daemon::start(&[]);
    let tails = [StreamTail::start(&cgroup), StreamTail::start(&cgroup)];

    let burst = probe(Some(&cgroup), &["settime-loop", &BURST.to_string()]);
    assert_eq!(burst.ret(), BURST as i64, "every call refused");
    let pid = burst.pid();

    for (i, tail) in tails.iter().enumerate() {
        wait_until(&format!("tail {i} to see the burst"), TIMEOUT, || {
            tail.events_of(pid).len() as u64 >= BURST
        });
    }
    let of_burst = |events: Vec<Value>| {
        events
            .into_iter()
            .filter(|e| e["process"]["pid"].as_u64() == Some(pid))
            .count() as u64
    };
    wait_until("the daemon's stdout to have the burst", TIMEOUT, || {
        of_burst(daemon.events()) >= BURST
    });
    thread::sleep(Duration::from_millis(300));
    for tail in &tails {
        let events = tail.events_of(pid);
        assert_eq!(events.len() as u64, BURST, "each tail sees each event once");
        assert_eq!(
            tail.dropped(),
            0,
            "nothing was dropped in a burst this small"
        );
        assert!(events.iter().all(|e| e["cgroup"]["id"] == cgroup.id()
            && e["enforcer"]["action"] == "deny"
            && e["event"]["kind"] == "alert"));
    }
    assert_eq!(of_burst(daemon.events()), BURST);
    // The daemon's stdout has the `tail --json` schema.
    let first = daemon
        .events()
        .into_iter()
        .find(|e| e["process"]["pid"].as_u64() == Some(pid))
        .expect("an event");
    assert_eq!(first["cgroup"]["path"], "/dm-fanout");
    assert_eq!(first["enforcer"]["operation"], "settime");
    assert_eq!(first["process"]["name"], "probe");
}

#[test]
fn metrics_count_every_denial_exactly() {
    const ATTEMPTS: u64 = 37;
    const PORT: u16 = 9477;
    loopback_up();
    let cgroup = Cgroup::new("dm-metrics");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let daemon = Daemon::start(&["--metrics", &format!("127.0.0.1:{PORT}")]);
    assert!(
        daemon
            .stderr()
            .contains(&format!("metrics on http://127.0.0.1:{PORT}/metrics")),
        "{}",
        daemon.stderr()
    );

    let attempt = probe(Some(&cgroup), &["settime-loop", &ATTEMPTS.to_string()]);
    assert_eq!(attempt.ret(), ATTEMPTS as i64);

    let id = cgroup.id().to_string();
    let decisions = |body: &str, action: &str| {
        sample(
            body,
            "enforcer_decisions_total",
            &[
                ("cgroup_id", &id),
                ("cgroup_path", "/dm-metrics"),
                ("operation", "settime"),
                ("action", action),
            ],
        )
    };
    let body = scrape(PORT);
    assert_eq!(decisions(&body, "deny"), Some(ATTEMPTS), "{body}");
    assert_eq!(decisions(&body, "audit"), Some(0), "{body}");
    assert_eq!(decisions(&body, "kill"), Some(0), "{body}");
    assert_eq!(
        counters(&cgroup, "settime").1,
        ATTEMPTS,
        "the same number as `enforcer list`"
    );
    let links = fs::read_dir(LINKS).expect("link pins").count() as u64;
    assert_eq!(
        sample(&body, "enforcer_programs_attached", &[]),
        Some(links),
        "{body}"
    );
    let policies: Value = serde_json::from_str(&enforcer_ok(&["list", "--json"])).expect("list");
    let policy_count = policies["policies"].as_array().expect("policies").len() as u64;
    assert_eq!(sample(&body, "enforcer_policies", &[]), Some(policy_count));
    // Delivered counts what the daemon read; events of this burst are among them once drained.
    wait_until("the daemon to deliver the burst", TIMEOUT, || {
        sample(&scrape(PORT), "enforcer_events_delivered_total", &[])
            .is_some_and(|delivered| delivered >= ATTEMPTS)
    });
    assert!(
        sample(&body, "enforcer_events_dropped_total", &[]).is_some(),
        "{body}"
    );
}

#[test]
fn a_killed_daemon_leaves_no_gap_and_a_restarted_one_adopts_the_pins() {
    let cgroup = Cgroup::new("dm-restart");
    let stop = "/tmp/dm-restart-stop";
    let _ = fs::remove_file(stop);
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let pinned = link_ids();
    assert!(!pinned.is_empty(), "no link pins");

    let mut first = Daemon::start(&[]);
    assert!(
        first.stderr().contains("adopted the pinned programs"),
        "{}",
        first.stderr()
    );
    assert_eq!(link_ids(), pinned, "the daemon loaded a second copy");

    let hammer = Command::new(probe_bin())
        .args(["--cgroup", cgroup.arg(), "settime-until", stop])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the storm");
    let denied = || counters(&cgroup, "settime").1;
    wait_until("the storm to start", TIMEOUT, || denied() > 0);
    let hammer_pid = u64::from(hammer.id());
    wait_until("the daemon to read the storm", TIMEOUT, || {
        first
            .events()
            .iter()
            .any(|e| e["process"]["pid"].as_u64() == Some(hammer_pid))
    });

    first.kill();
    let at_kill = denied();
    wait_until("denials to go on without a daemon", TIMEOUT, || {
        denied() > at_kill
    });

    let second = Daemon::start(&[]);
    assert!(
        second.stderr().contains("adopted the pinned programs"),
        "{}",
        second.stderr()
    );
    assert_eq!(
        link_ids(),
        pinned,
        "the restarted daemon reloaded the programs"
    );
    let at_restart = denied();
    wait_until("denials to go on under the new daemon", TIMEOUT, || {
        denied() > at_restart
    });
    wait_until("the new daemon to read the storm", TIMEOUT, || {
        second
            .events()
            .iter()
            .any(|e| e["process"]["pid"].as_u64() == Some(hammer_pid))
    });

    fs::write(stop, "").expect("stop the storm");
    let output = hammer.wait_with_output().expect("storm");
    let _ = fs::remove_file(stop);
    let report: Value = serde_json::from_slice(&output.stdout).expect("storm JSON");
    let refused = report["ret"].as_u64().expect("refused");
    let calls = report["calls"].as_u64().expect("calls");
    assert!(calls > 0);
    assert_eq!(refused, calls, "a call succeeded while the daemon was away");
    assert_eq!(denied(), calls, "each call was one counted denial");
    assert_eq!(link_ids(), pinned);
}

#[test]
fn a_second_daemon_is_refused_and_changes_nothing() {
    let cgroup = Cgroup::new("dm-second");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let mut first = Daemon::start(&[]);
    let socket_before = fs::metadata(SOCKET).expect("socket").ino();
    let pinned = link_ids();

    let second = enforcer(&["daemon"]);
    assert_eq!(second.code(), Some(ALREADY_RUNNING), "{second:?}");
    let lines: Vec<&str> = second.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one stderr line: {:?}", second.stderr);
    assert!(lines[0].contains("already running"), "{}", lines[0]);
    assert!(
        lines[0].contains(&format!("pid {}", first.child.id())),
        "{}",
        lines[0]
    );
    assert!(second.stdout.is_empty());

    assert_eq!(fs::metadata(SOCKET).expect("socket").ino(), socket_before);
    assert_eq!(link_ids(), pinned);
    assert!(
        matches!(first.child.try_wait(), Ok(None)),
        "the first daemon died"
    );
    assert_eq!(
        fs::read_to_string(LOCK).expect("lock").trim(),
        first.child.id().to_string()
    );
    // The first one still serves.
    let tail = StreamTail::start(&cgroup);
    let attempt = probe(Some(&cgroup), &["settimeofday", "0"]);
    wait_until("the first daemon to deliver", TIMEOUT, || {
        !tail.events_of(attempt.pid()).is_empty()
    });
    assert!(first.terminate().success());
}

#[test]
fn sigterm_leaves_enforcement_in_place() {
    let cgroup = Cgroup::new("dm-term");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let pinned = link_ids();
    let mut daemon = Daemon::start(&[]);
    let mode = fs::metadata(SOCKET).expect("socket").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let dir_mode = fs::metadata("/run/enforcer")
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "directory mode {dir_mode:o}");
    let mut tail = StreamTail::start(&cgroup);
    let before = probe(Some(&cgroup), &["settimeofday", "0"]);
    assert_eq!(before.errno(), EPERM);
    wait_until("the tail to see the event", TIMEOUT, || {
        !tail.events_of(before.pid()).is_empty()
    });

    let status = daemon.terminate();
    assert!(status.success(), "{status:?}: {}", daemon.stderr());
    let last = daemon.stderr();
    let last = last.lines().last().unwrap_or("");
    assert!(last.contains("enforcement continues"), "{last}");
    assert!(!Path::new(SOCKET).exists(), "the socket was left behind");

    // The tail reading through the daemon notices, says so in one line, and fails.
    let status = wait_exit(&mut tail.child, TIMEOUT).expect("the tail kept running");
    assert_eq!(status.code(), Some(DAEMON_GONE), "{status:?}");
    let stderr = tail.stderr.lock().expect("stderr").clone();
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(stderr[0].contains("daemon went away"), "{}", stderr[0]);

    // Enforcement is as it was: same programs, same policy, still denying.
    assert_eq!(link_ids(), pinned);
    let after = probe(Some(&cgroup), &["settimeofday", "0"]);
    assert_eq!(after.errno(), EPERM, "denied after the daemon stopped");
    assert_eq!(counters(&cgroup, "settime").1, 2);
}

#[test]
fn tail_reads_the_ring_buffer_itself_when_the_daemon_was_killed() {
    let cgroup = Cgroup::new("dm-stale");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let mut daemon = Daemon::start(&[]);
    daemon.kill();
    assert!(
        Path::new(SOCKET).exists(),
        "a killed daemon leaves its socket"
    );

    // Nothing accepts on the stale socket: the tail consumes the ring buffer, as without a daemon.
    let tail = Tail::start(&["--cgroup", cgroup.arg()]);
    let attempt = probe(Some(&cgroup), &["settimeofday", "0"]);
    tail.wait_for(|e| e["process"]["pid"].as_u64() == Some(attempt.pid()));
    assert!(
        UnixStream::connect(SOCKET).is_err(),
        "something listens on the stale socket"
    );
}

#[test]
fn a_tail_started_before_the_daemon_hands_over_to_it() {
    let cgroup = Cgroup::new("dm-handover");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let _ = fs::remove_file(SOCKET);
    let mut tail = StreamTail::start(&cgroup);
    let direct = probe(Some(&cgroup), &["settimeofday", "0"]);
    wait_until("the tail to read the ring buffer", TIMEOUT, || {
        !tail.events_of(direct.pid()).is_empty()
    });

    let mut daemon = Daemon::start(&[]);
    wait_until("the tail to hand over to the daemon", TIMEOUT, || {
        tail.stderr
            .lock()
            .expect("stderr")
            .iter()
            .any(|line| line.contains("daemon started"))
    });
    // Both see the next event: the daemon is the only consumer, and the tail reads its stream.
    let through = probe(Some(&cgroup), &["settimeofday", "0"]);
    wait_until(
        "the tail to see the event through the daemon",
        TIMEOUT,
        || !tail.events_of(through.pid()).is_empty(),
    );
    wait_until("the daemon to see the event", TIMEOUT, || {
        daemon
            .events()
            .iter()
            .any(|e| e["process"]["pid"].as_u64() == Some(through.pid()))
    });
    assert!(daemon.terminate().success());
    let status = wait_exit(&mut tail.child, TIMEOUT).expect("the tail kept running");
    assert_eq!(status.code(), Some(DAEMON_GONE));
}

#[test]
fn the_daemon_respects_a_reset_and_follows_the_next_attach() {
    let cgroup = Cgroup::new("dm-reset");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let daemon = Daemon::start(&[]);
    enforcer_ok(&["reset"]);
    wait_until("the daemon to notice the reset", TIMEOUT, || {
        daemon.stderr().contains("were removed")
    });
    assert!(
        !Path::new(LINKS).exists(),
        "the daemon reinstalled after a reset"
    );
    // The kernel detaches the programs shortly after their last link pin goes (deferred work).
    wait_until("the reset to end enforcement", TIMEOUT, || {
        // settimeofday(NULL, NULL): refused under the policy, a no-op without it.
        probe(Some(&cgroup), &["settime-loop", "1"]).ret() == 0
    });
    assert!(!Path::new(LINKS).exists(), "the daemon reinstalled");

    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    wait_until("the daemon to read the new pins", TIMEOUT, || {
        daemon.stderr().contains("new pins")
    });
    let attempt = probe(Some(&cgroup), &["settimeofday", "0"]);
    assert_eq!(attempt.errno(), EPERM);
    wait_until(
        "the daemon to deliver from the new ring buffer",
        TIMEOUT,
        || {
            daemon
                .events()
                .iter()
                .any(|e| e["process"]["pid"].as_u64() == Some(attempt.pid()))
        },
    );
}

#[test]
fn a_storm_through_the_daemon_is_delivered_dropped_or_suppressed_exactly() {
    const ATTEMPTS: u64 = 20_000;
    let cgroup = Cgroup::new("dm-storm");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let daemon = Daemon::start(&[]);
    let mut tail = spawn_json_tail(&cgroup);
    let storm = spawn_storm(&cgroup, ATTEMPTS);
    let pid = u64::from(storm.id());
    // Count the tail's lines without keeping them.
    let counts = Arc::new(Mutex::new((0u64, 0u64)));
    let sink = Arc::clone(&counts);
    let stdout = tail.stdout.take().expect("tail stdout");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let record: Value = serde_json::from_str(&line).expect("JSON line");
            let mut counts = sink.lock().expect("counts");
            if record["process"]["pid"].as_u64() == Some(pid)
                && record["enforcer"]["kind"] != "summary"
            {
                counts.0 += 1;
            } else if record["event"]["action"] == "events-dropped" {
                counts.1 += record["enforcer"]["dropped"].as_u64().expect("dropped");
            }
        }
    });
    let output = storm.wait_with_output().expect("storm");
    let report: Value = serde_json::from_slice(&output.stdout).expect("storm JSON");
    assert_eq!(report["ret"].as_u64(), Some(ATTEMPTS), "every call refused");
    // What the event budget held back is counted exactly in the kernel.
    let suppressed = suppressed(&cgroup);

    let tail_total = || {
        let counts = counts.lock().expect("counts");
        counts.0 + counts.1 + suppressed
    };
    let daemon_counts = || {
        let records = daemon.events();
        let received = records
            .iter()
            .filter(|e| {
                e["process"]["pid"].as_u64() == Some(pid) && e["enforcer"]["kind"] != "summary"
            })
            .count() as u64;
        let dropped: u64 = records
            .iter()
            .filter(|e| e["event"]["action"] == "events-dropped")
            .filter_map(|e| e["enforcer"]["dropped"].as_u64())
            .sum();
        (received, dropped)
    };
    wait_until(
        "the tail to account for the storm",
        Duration::from_secs(120),
        || tail_total() >= ATTEMPTS,
    );
    wait_until(
        "the daemon to account for the storm",
        Duration::from_secs(60),
        || {
            let (received, dropped) = daemon_counts();
            received + dropped + suppressed >= ATTEMPTS
        },
    );
    thread::sleep(Duration::from_millis(500));
    let _ = tail.kill();
    let _ = tail.wait();
    let (received, dropped) = *counts.lock().expect("counts");
    eprintln!("tail: {received} received, {dropped} reported dropped, {suppressed} suppressed");
    assert_eq!(
        received + dropped + suppressed,
        ATTEMPTS,
        "the tail: {received} + {dropped} + {suppressed}"
    );
    let (received, dropped) = daemon_counts();
    assert_eq!(
        received + dropped + suppressed,
        ATTEMPTS,
        "the daemon: {received} + {dropped} + {suppressed}"
    );
    assert_eq!(counters(&cgroup, "settime").1, ATTEMPTS);
}
