//! Guest side of `cargo xtask bench hooks`: what a hooked system call costs, in guest instructions.
//!
//! How it counts instructions: xtask boots this VM with `-smp 1 -icount shift=0,sleep=off`. QEMU
//! then advances the guest's clocks by exactly 1 ns per guest instruction executed (2^shift, shift
//! 0), and `sleep=off` skips idle time instead of waiting it out. So the CLOCK_MONOTONIC
//! nanoseconds around a loop of N calls, divided by N, are the guest instructions per call, user
//! and kernel alike: exact and the same from run to run, unlike wall time under TCG, which
//! inflates BPF code far more than plain kernel code. The few instructions of the loop itself are
//! the same in every config and cancel in the differences xtask derives. Timer ticks land in the
//! loops too: one every few million instructions, well under 0.1% of a measurement.
//!
//! Prints `BENCH <config> <round> <instructions per call>` for each measurement; xtask makes the
//! tables. Run as root in the bench VM only: it loads BPF programs and moves itself between
//! cgroups.
use std::process::{Command, ExitCode};
use std::time::Duration;
use std::{env, fs, ptr, thread};

use anyhow::{Context, Result, bail, ensure};
use libc::c_long;
use nix::time::{ClockId, clock_gettime};

/// Calls per measurement.
const ITERS: u32 = 100_000;
/// Calls per measurement on the deny path. Each denial puts a 456-byte record (448 + header) in
/// the enforcer's 1 MiB ring buffer (room for ~2300) and nothing drains it in the no-wakeup
/// configs: all rounds together (plus the checks) must stay below full, or later denials would
/// take the drop path and measure something else.
const DENY_ITERS: u32 = 1_000;
const ROUNDS: u32 = 2;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Holds the policy (depth 1).
const POLICY: &str = "/sys/fs/cgroup/bench-policy";
/// Callers outside the policy, at depth 1 and 6.
const OUTSIDE_D1: &str = "/sys/fs/cgroup/bench-out";
const OUTSIDE_D6: &str = "/sys/fs/cgroup/d1/d2/d3/d4/d5/d6";
/// Where `enforcer bench-empty --hook H` pins the link of its do-nothing program.
const EMPTY_PIN_DIR: &str = "/sys/fs/bpf/enforcer-bench";

/// What every call of a measurement must do.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    /// Succeed (return 0 or more).
    Success,
    /// Fail with EPERM.
    Eperm,
}

fn getpid() -> c_long {
    // SAFETY: getpid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_getpid) }
}

/// `settimeofday(NULL, NULL)`: passes the `capable(CAP_SYS_TIME)` and `settime` LSM hooks and
/// changes nothing. The raw syscall: glibc's wrapper dereferences the NULL timeval.
fn settime() -> c_long {
    let null = ptr::null::<libc::c_void>();
    // SAFETY: NULL is valid for both arguments of the settimeofday system call.
    unsafe { libc::syscall(libc::SYS_settimeofday, null, null) }
}

fn main() -> ExitCode {
    let result = match env::args().nth(1).as_deref() {
        Some("hooks") => hooks(),
        Some("events-rate") => events_rate(),
        Some("syscalls") => syscalls(),
        Some("seccomp-child") => seccomp_child(),
        _ => Err(anyhow::anyhow!("usage: bench hooks|events-rate")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn hooks() -> Result<()> {
    // Let the rest of boot finish first.
    thread::sleep(Duration::from_secs(3));

    bench("getpid", ITERS, Want::Success, getpid)?;
    let none = bench("settime", ITERS, Want::Success, settime)?;

    // A filter stays for the life of the process: measure it in a child.
    let status = Command::new(env::current_exe()?)
        .arg("seccomp-child")
        .status()?;
    ensure!(status.success(), "the seccomp child failed ({status})");

    for hook in ["settime", "capable"] {
        let pin = format!("{EMPTY_PIN_DIR}/{hook}");
        let out = enforcer(&["bench-empty", "--hook", hook])?;
        ensure!(
            fs::exists(&pin)?,
            "`enforcer bench-empty --hook {hook}` did not pin {pin} (it said: {out})"
        );
        bench(&format!("empty-{hook}"), ITERS, Want::Success, settime)?;
        // Nothing else holds the link (enforcer has exited), so removing its pin detaches it.
        fs::remove_file(&pin).with_context(|| format!("rm {pin}"))?;
        settle();
        let after = per_call(ITERS / 10, Want::Success, settime)?;
        ensure!(
            close(after, none),
            "the empty program on {hook} still runs after rm {pin}: {after:.1} vs {none:.1}"
        );
    }

    for dir in [POLICY, OUTSIDE_D1, OUTSIDE_D6] {
        fs::create_dir_all(dir).with_context(|| format!("mkdir {dir}"))?;
    }
    enforcer(&["attach", "--cgroup", POLICY, "--deny", "settime"])?;
    // Events on every call: the event budget (which a long loop would exhaust) never runs out.
    enforcer(&["bench-events", "normal"])?;
    join(OUTSIDE_D1)?;
    bench("outside-d1", ITERS, Want::Success, settime)?;
    join(OUTSIDE_D6)?;
    bench("outside-d6", ITERS, Want::Success, settime)?;
    bench("getpid-enforcer", ITERS, Want::Success, getpid)?;
    join(POLICY)?;
    // The deny path under each event mode: no event, an event without wakeup (the default),
    // an event with a wakeup each. The first two run with no consumer: both rounds' events fit in
    // the ring buffer, and without a wakeup the consumer is off the producer's path by design.
    // The wakeup mode needs a consumer to wake; its work runs on the one CPU and counts too,
    // timer ticks included, so its rounds vary.
    enforcer(&["bench-events", "none"])?;
    bench("denied-no-event", DENY_ITERS, Want::Eperm, settime)?;
    enforcer(&["bench-events", "normal"])?;
    bench("denied", DENY_ITERS, Want::Eperm, settime)?;
    let mut consumer = outside(&mut Command::new(enforcer_bin()))
        .args(object_args())
        .args(["tail", "--json"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("start a consumer")?;
    enforcer(&["bench-events", "wakeup-each"])?;
    bench("denied-wakeup", DENY_ITERS, Want::Eperm, settime)?;
    enforcer(&["bench-events", "normal"])?;
    let _ = consumer.kill();
    let _ = consumer.wait();

    join(CGROUP_ROOT)?;
    enforcer(&["reset"])?;
    Ok(())
}

/// Guest side of `cargo xtask bench syscalls`: what the syscall layer's `sys_enter` and
/// `sys_exit` programs cost every system call of every task, guarded or not: `getpid` and a
/// one-byte `read` of /dev/zero with no programs, with the LSM programs only (a policy without
/// the syscall layer), with the syscall layer on (caller outside the policy, then inside), and
/// after the last policy wanting the layer went (its links unpinned).
fn syscalls() -> Result<()> {
    thread::sleep(Duration::from_secs(3));
    let zero = fs::File::open("/dev/zero").context("open /dev/zero")?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&zero);
    let mut byte = [0u8; 1];
    let buf = byte.as_mut_ptr().cast::<libc::c_void>();
    // SAFETY: one byte into a live one-byte buffer from an open descriptor.
    let read1 = || unsafe { libc::read(fd, buf, 1) } as c_long;
    const LINK: &str = "/sys/fs/bpf/enforcer/v1/links/sys_enter";

    bench("sc-getpid-none", ITERS, Want::Success, getpid)?;
    bench("sc-read-none", ITERS, Want::Success, read1)?;
    // The kernel's tracing path alone: do-nothing programs on both tracepoints.
    for hook in ["sys_enter", "sys_exit"] {
        enforcer(&["bench-empty", "--hook", hook])?;
    }
    bench("sc-getpid-empty", ITERS, Want::Success, getpid)?;
    for hook in ["sys_enter", "sys_exit"] {
        let pin = format!("{EMPTY_PIN_DIR}/{hook}");
        fs::remove_file(&pin).with_context(|| format!("rm {pin}"))?;
    }
    fs::create_dir_all(POLICY).with_context(|| format!("mkdir {POLICY}"))?;
    enforcer(&["attach", "--cgroup", POLICY, "--deny", "settime"])?;
    // Events on every call: the event budget (which a long loop would exhaust) never runs out.
    enforcer(&["bench-events", "normal"])?;
    ensure!(
        !fs::exists(LINK)?,
        "the syscall layer is attached without a policy wanting it"
    );
    bench("sc-getpid-lsm", ITERS, Want::Success, getpid)?;
    bench("sc-read-lsm", ITERS, Want::Success, read1)?;
    enforcer(&[
        "attach", "--cgroup", POLICY, "--layer", "both", "--deny", "settime",
    ])?;
    ensure!(
        fs::exists(LINK)?,
        "--layer both did not attach the syscall layer"
    );
    bench("sc-getpid-layer", ITERS, Want::Success, getpid)?;
    bench("sc-read-layer", ITERS, Want::Success, read1)?;
    join(POLICY)?;
    bench("sc-getpid-inside", ITERS, Want::Success, getpid)?;
    join(CGROUP_ROOT)?;
    enforcer(&["attach", "--cgroup", POLICY, "--deny", "settime"])?;
    // Events on every call: the event budget (which a long loop would exhaust) never runs out.
    enforcer(&["bench-events", "normal"])?;
    ensure!(
        !fs::exists(LINK)?,
        "the syscall layer stayed after its last policy went"
    );
    bench("sc-getpid-after", ITERS, Want::Success, getpid)?;
    drop(zero);
    enforcer(&["reset"])?;
    Ok(())
}

/// Guest side of `cargo xtask bench events`, in real time (no icount; wall time is TCG's, so the
/// numbers are for comparing modes on one machine, not for sizing hardware). Denials are produced
/// by this process in a policy cgroup as fast as it can, then paced at lower rates; a consumer
/// (`enforcer tail --json`, whose output this process reads and throws away, as /dev/null would)
/// reports what it received and what was dropped. Prints
/// `RATE <label> <target/s or 0> <offered/s> <received> <dropped> <attempts>`.
fn events_rate() -> Result<()> {
    use std::io::{BufRead, BufReader};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    thread::sleep(Duration::from_secs(2));
    const RATE_CGROUP: &str = "/sys/fs/cgroup/bench-rate";
    /// Unpaced: this many; paced: four seconds' worth, so the ring buffer (~2,400 events) cannot
    /// hide a consumer that falls behind.
    const UNPACED_ATTEMPTS: u64 = 100_000;
    fs::create_dir_all(RATE_CGROUP)?;
    enforcer(&["attach", "--cgroup", RATE_CGROUP, "--deny", "settime"])?;
    // Events on every call: the event budget (which a long loop would exhaust) never runs out.
    enforcer(&["bench-events", "normal"])?;

    for target in [0u64, 100_000, 50_000, 20_000, 10_000, 5_000] {
        let attempts = if target == 0 {
            UNPACED_ATTEMPTS
        } else {
            target * 4
        };
        let mut tail = outside(&mut Command::new(enforcer_bin()))
            .args(object_args())
            .args(["tail", "--json", "--cgroup", RATE_CGROUP])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("start tail")?;
        let received = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (r, d) = (Arc::clone(&received), Arc::clone(&dropped));
        let stdout = tail.stdout.take().context("tail stdout")?;
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("\"dropped\":").nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    d.fetch_add(digits.parse().unwrap_or(0), Ordering::Relaxed);
                } else {
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        thread::sleep(Duration::from_millis(500));
        join(RATE_CGROUP)?;
        let start = Instant::now();
        for i in 0..attempts {
            ensure!(
                settime() == -1,
                "a call in the policy cgroup was not refused"
            );
            if target > 0 && i % 100 == 99 {
                // Pace: sleep until the time the next batch is due.
                let due = Duration::from_secs_f64((i + 1) as f64 / target as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    thread::sleep(wait);
                }
            }
        }
        let offered = attempts as f64 / start.elapsed().as_secs_f64();
        join(CGROUP_ROOT)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let total = || received.load(Ordering::Relaxed) + dropped.load(Ordering::Relaxed);
        while total() < attempts && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        let _ = tail.kill();
        let _ = tail.wait();
        let _ = reader.join();
        println!(
            "RATE {} {target} {offered:.0} {} {} {attempts}",
            if target == 0 { "unpaced" } else { "paced" },
            received.load(Ordering::Relaxed),
            dropped.load(Ordering::Relaxed)
        );
    }
    enforcer(&["reset"])?;
    Ok(())
}

/// The seccomp config, run in a child process: installs the filter, checks that it refuses, then
/// measures.
fn seccomp_child() -> Result<()> {
    deny_settimeofday_by_seccomp()?;
    bench("seccomp", ITERS, Want::Eperm, settime)?;
    Ok(())
}

/// Measures `ROUNDS` times, printing a `BENCH` line per round; returns the first round's value.
fn bench(config: &str, iters: u32, want: Want, call: impl Fn() -> c_long) -> Result<f64> {
    settle();
    let mut first = None;
    for round in 1..=ROUNDS {
        let per_call = per_call(iters, want, &call).with_context(|| format!("config {config}"))?;
        println!("BENCH {config} {round} {per_call:.1}");
        first.get_or_insert(per_call);
    }
    Ok(first.expect("ROUNDS > 0"))
}

/// Guest instructions per `call()` over `iters` calls (see the top of this file). Fails unless
/// every call had the outcome `want`.
fn per_call(iters: u32, want: Want, call: impl Fn() -> c_long) -> Result<f64> {
    check(want, call())?;
    let refused = want == Want::Eperm;
    let mut wrong = 0u32;
    let start = now_ns()?;
    for _ in 0..iters {
        wrong += u32::from((call() < 0) != refused);
    }
    let end = now_ns()?;
    ensure!(wrong == 0, "{wrong} of {iters} calls had another outcome");
    // The last call's errno is still in place.
    check(want, if refused { -1 } else { 0 })?;
    Ok((end - start) as f64 / f64::from(iters))
}

fn check(want: Want, ret: c_long) -> Result<()> {
    let errno = std::io::Error::last_os_error();
    match want {
        Want::Success if ret < 0 => bail!("a call failed ({ret}, errno: {errno})"),
        Want::Eperm if ret != -1 || errno.raw_os_error() != Some(libc::EPERM) => {
            bail!("a call was not refused with EPERM (returned {ret}, errno: {errno})")
        }
        _ => Ok(()),
    }
}

/// Waits for deferred kernel work to finish so that it does not run inside a measurement (one
/// CPU runs everything): freeing what an `enforcer` run loaded and did not pin, RCU callbacks,
/// and the detach of a link whose pin was removed, which happens in a work item after an RCU
/// grace period, not in `unlink`. With `sleep=off` the idle time costs no wall time.
fn settle() {
    thread::sleep(Duration::from_secs(1));
}

fn now_ns() -> Result<i128> {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC)?;
    Ok(i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec()))
}

/// Within 1%: what two measurements of the same thing must agree to.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 0.01 * b
}

/// Moves this process into the cgroup `dir`.
fn join(dir: &str) -> Result<()> {
    fs::write(
        format!("{dir}/cgroup.procs"),
        std::process::id().to_string(),
    )
    .with_context(|| format!("cannot move into {dir}"))
}

/// The benches' BPF object (built with the `bench` feature: the do-nothing programs and the
/// event switches the shipped object lacks), loaded by every enforcer command of a bench.
const BENCH_OBJECT: &str = "/lib/enforcer-bench.bpf.o";

/// Starts the command in the cgroup v2 root, outside every policy, wherever the driver is:
/// tamper protection refuses the enforcer's maps to any process a policy covers.
fn outside(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the child only makes system calls on stack buffers (no
    // allocation: the driver has threads).
    unsafe {
        command.pre_exec(|| {
            let mut digits = [0u8; 20];
            let mut at = digits.len();
            let mut pid = libc::getpid() as u32;
            loop {
                at -= 1;
                digits[at] = b'0' + (pid % 10) as u8;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            let fd = libc::open(c"/sys/fs/cgroup/cgroup.procs".as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, digits[at..].as_ptr().cast(), digits.len() - at);
            libc::close(fd);
            if written < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

fn object_args() -> Vec<&'static str> {
    if std::path::Path::new(BENCH_OBJECT).is_file() {
        vec!["--bpf-object", BENCH_OBJECT]
    } else {
        Vec::new()
    }
}

fn enforcer_bin() -> String {
    env::var("ENFORCER_BIN").unwrap_or_else(|_| "/bin/enforcer".into())
}

/// Runs the enforcer CLI (`$ENFORCER_BIN`) and returns its stdout; fails unless it exits 0.
fn enforcer(args: &[&str]) -> Result<String> {
    let bin = enforcer_bin();
    let out = outside(&mut Command::new(&bin))
        .args(object_args())
        .args(args)
        .output()
        .with_context(|| format!("cannot run {bin}"))?;
    ensure!(
        out.status.success(),
        "`enforcer {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Installs a seccomp filter with one rule: `settimeofday` fails with EPERM, everything else is
/// allowed (other architectures' calls kill the process, as every filter must check the arch).
fn deny_settimeofday_by_seccomp() -> Result<()> {
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, SECCOMP_RET_ALLOW,
        SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS, seccomp_data, sock_filter, sock_fprog,
    };
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let load = |offset: usize| sock_filter {
        code: (BPF_LD | BPF_W | BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: offset as u32,
    };
    // If the loaded word equals k, skip `jt` instructions, else `jf`.
    let jump_eq = |k: u32, jt: u8, jf: u8| sock_filter {
        code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ret = |k: u32| sock_filter {
        code: (BPF_RET | BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut filter = [
        load(std::mem::offset_of!(seccomp_data, arch)),
        jump_eq(AUDIT_ARCH_X86_64, 1, 0),
        ret(SECCOMP_RET_KILL_PROCESS),
        load(std::mem::offset_of!(seccomp_data, nr)),
        jump_eq(libc::SYS_settimeofday as u32, 0, 1),
        ret(SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ret(SECCOMP_RET_ALLOW),
    ];
    let program = sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; `program` points at `filter`, which outlives the call (the
    // kernel copies it).
    unsafe {
        ensure!(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0,
            "PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        );
        ensure!(
            libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program) == 0,
            "PR_SET_SECCOMP: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
