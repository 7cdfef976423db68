//! Tries one guarded operation, optionally from inside a cgroup, and prints one JSON line with the
//! outcome: `{"pid":..,"op":..,"ret":..,"errno":..}`. The VM tests drive it; it never judges.
use std::{env, fs, process::ExitCode};

fn main() -> ExitCode {
    let mut args: Vec<String> = env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--cgroup") && args.len() >= 2 {
        let dir = args.remove(1);
        args.remove(0);
        let procs = format!("{dir}/cgroup.procs");
        if let Err(err) = fs::write(&procs, std::process::id().to_string()) {
            eprintln!("probe: cannot join {dir}: {err}");
            return ExitCode::from(2);
        }
    }
    let Some(op) = args.first().cloned() else {
        eprintln!("usage: probe [--cgroup DIR] OP [ARGS]");
        return ExitCode::from(2);
    };
    let number = |i: usize| args.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let outcome = match op.as_str() {
        "settimeofday" => settimeofday(number(1)),
        "clock_settime" => clock_settime(number(1)),
        // Repeats settimeofday(NULL, NULL) `count` times and reports how many were refused: a
        // no-op for the clock, but it passes the settime hook every time.
        "settime-loop" => {
            let count = number(1);
            let mut refused = 0;
            for _ in 0..count {
                // The raw syscall: glibc's wrapper dereferences a NULL timeval.
                // SAFETY: NULL arguments are valid for the settimeofday system call.
                let null = std::ptr::null::<libc::c_void>();
                if unsafe { libc::syscall(libc::SYS_settimeofday, null, null) } != 0 {
                    refused += 1;
                }
            }
            println!(
                "{{\"pid\":{},\"op\":\"settime-loop\",\"ret\":{refused},\"errno\":0}}",
                std::process::id()
            );
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("probe: unknown operation {other}");
            return ExitCode::from(2);
        }
    };
    let (ret, errno) = match outcome {
        Ok(ret) => (ret, 0),
        Err(errno) => (-1, errno),
    };
    println!(
        "{{\"pid\":{},\"op\":\"{op}\",\"ret\":{ret},\"errno\":{errno}}}",
        std::process::id()
    );
    ExitCode::SUCCESS
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn settimeofday(sec: i64) -> Result<i64, i32> {
    let tv = libc::timeval {
        tv_sec: sec,
        tv_usec: 0,
    };
    // The raw syscall: glibc implements settimeofday() with clock_settime.
    // SAFETY: valid pointer to a timeval on the stack; no timezone.
    let tz = std::ptr::null::<libc::timezone>();
    match unsafe { libc::syscall(libc::SYS_settimeofday, &tv, tz) } {
        0 => Ok(0),
        _ => Err(last_errno()),
    }
}

fn clock_settime(sec: i64) -> Result<i64, i32> {
    let ts = libc::timespec {
        tv_sec: sec,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec on the stack.
    match unsafe { libc::syscall(libc::SYS_clock_settime, libc::CLOCK_REALTIME, &ts) } {
        0 => Ok(0),
        _ => Err(last_errno()),
    }
}
