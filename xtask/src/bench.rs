//! `cargo xtask bench hooks`: what enforcer adds to a hooked system call, in guest instructions,
//! on each kernel.
//!
//! Each kernel boots with one CPU and `-icount shift=0,sleep=off`: the guest clock then advances
//! 1 ns per guest instruction executed, so a loop timed with it counts instructions exactly (wall
//! time under TCG would not mean anything for BPF code). /init's `bench` mode runs
//! `/bin/bench hooks` (tests/src/bin/bench.rs), which measures every config twice and prints
//! `BENCH <config> <round> <instructions per call>` lines; this module collects them and prints a
//! table per kernel, the differences that matter and the targets beside them.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use xtask::kernels::{self, Kernel, Series};
use xtask::toolchain;
use xtask::vm::{self, VmSpec};

#[derive(Subcommand)]
pub enum Bench {
    /// Instructions per getpid / settimeofday(NULL, NULL) call, with and without enforcer.
    ///
    /// Configs: nothing loaded, a one-rule seccomp filter, an empty BPF LSM program on settime
    /// and on capable, enforcer with the caller outside its policy (depth 1 and 6) and inside.
    Hooks(HooksArgs),
    /// The hooks table (its last rows: a denied call without an event, with an event, with a
    /// wakeup each, in instructions), then events delivered per second to a consumer (real time,
    /// no icount), unpaced and paced, with drops: the rate a consumer keeps up with.
    Events(HooksArgs),
    /// Instructions per getpid / 1-byte read with no programs, the LSM programs only, and the
    /// syscall layer on, as ratios.
    Syscalls(HooksArgs),
}

/// `bench syscalls` configs: (config, label).
const SYSCALL_CONFIGS: [(&str, &str); 9] = [
    ("sc-getpid-none", "getpid, no programs"),
    (
        "sc-getpid-empty",
        "getpid, empty programs on sys_enter/sys_exit",
    ),
    ("sc-getpid-lsm", "getpid, LSM programs only"),
    (
        "sc-getpid-layer",
        "getpid, syscall layer on, caller outside",
    ),
    (
        "sc-getpid-inside",
        "getpid, syscall layer on, caller inside",
    ),
    (
        "sc-getpid-after",
        "getpid, after the layer's last policy went",
    ),
    ("sc-read-none", "read 1 byte, no programs"),
    ("sc-read-lsm", "read 1 byte, LSM programs only"),
    ("sc-read-layer", "read 1 byte, syscall layer on"),
];

#[derive(Args)]
pub struct HooksArgs {
    /// Kernel series to bench on (repeatable); default: all.
    #[arg(long = "kernel", value_enum)]
    kernels: Vec<Series>,
    /// Stream the whole VM console.
    #[arg(long)]
    verbose: bool,
    /// Per-kernel limit in seconds (QEMU is killed past it).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// The configs the guest measures, in its order, with their labels.
const CONFIGS: [(&str, &str); 11] = [
    ("getpid", "getpid, nothing loaded"),
    ("settime", "settimeofday(NULL, NULL), nothing loaded"),
    ("seccomp", "  refused by a one-rule seccomp filter"),
    ("empty-settime", "  empty BPF LSM program on settime"),
    ("empty-capable", "  empty BPF LSM program on capable"),
    ("outside-d1", "  enforcer on, caller outside, depth 1"),
    ("outside-d6", "  enforcer on, caller outside, depth 6"),
    ("getpid-enforcer", "getpid, enforcer on"),
    (
        "denied-no-event",
        "settimeofday(NULL, NULL), denied, no event",
    ),
    ("denied", "  denied, event without wakeup (default)"),
    ("denied-wakeup", "  denied, event with a wakeup each"),
];

/// Configs whose rounds may disagree: a consumer process runs beside them on the one CPU.
const VARIABLE: [&str; 1] = ["denied-wakeup"];

/// How closely the rounds of a config must agree (relative), and the tolerance of the targets
/// that say "equal".
const AGREE: f64 = 0.01;

const LABEL_WIDTH: usize = 52;

pub fn run(bench: Bench) -> Result<ExitCode> {
    let (args, mode) = match bench {
        Bench::Hooks(args) => (args, "hooks"),
        Bench::Events(args) => (args, "events-rate"),
        Bench::Syscalls(args) => (args, "syscalls"),
    };
    let mut series = Series::ALL.to_vec();
    if !args.kernels.is_empty() {
        series.retain(|s| args.kernels.contains(s));
    }
    toolchain::bootstrap()?;
    eprintln!("== guest binaries");
    let initrd = crate::prepare_vm("bench")?;
    let mut ok = true;
    for s in series {
        let kernel = kernels::resolve(s)?;
        // The event rows (denied without an event, with one, with a wakeup each) come from the
        // same icount boot as the hook rows; `events` adds the real-time rate to them.
        ok &= match mode {
            "events-rate" => {
                hooks(&kernel, &initrd, &args)? & events_rate(&kernel, &initrd, &args)?
            }
            "syscalls" => syscalls(&kernel, &initrd, &args)?,
            _ => hooks(&kernel, &initrd, &args)?,
        };
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the real-time event-rate bench on one kernel and prints its table.
fn events_rate(kernel: &Kernel, initrd: &Path, args: &HooksArgs) -> Result<bool> {
    let label = kernel.label();
    println!();
    println!("== kernel {} ({})", kernel.release, kernel.package);
    let mut spec = VmSpec::new(kernel, initrd, "bench");
    spec.cmdline_extra.push("enforcer.bench=events-rate".into());
    spec.timeout = Duration::from_secs(args.timeout);
    if !args.verbose {
        spec.cmdline_extra.push("quiet".into());
    }
    let mut rows = Vec::new();
    let outcome = vm::run(&spec, &mut |line| {
        if vm::marker_value(line, vm::BOOTED_MARKER).is_some() {
            rows.clear();
        }
        if args.verbose || line.starts_with("bench: ") {
            println!("[{label}] {line}");
        }
        if let Some(rest) = line.strip_prefix("RATE ") {
            rows.push(
                rest.split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            );
        }
    })?;
    println!(
        "events to `enforcer tail --json` (real time under TCG, 2 vCPUs; compare rows, not machines)"
    );
    println!(
        "{:<10} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "producer", "target/s", "offered/s", "received", "dropped", "attempts"
    );
    for row in &rows {
        if let [mode, target, offered, received, dropped, attempts] = row.as_slice() {
            let target = if target == "0" { "-" } else { target.as_str() };
            println!(
                "{mode:<10} {target:>12} {offered:>12} {received:>10} {dropped:>10} {attempts:>10}"
            );
        }
    }
    let complete = rows.iter().all(|row| {
        let n = |i: usize| row.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        n(3) + n(4) == n(5)
    });
    println!(
        "received + dropped == attempts in every row: {}",
        if complete { "yes" } else { "NO" }
    );
    if let Some(reason) = outcome.failure_reason() {
        println!("[{label}] bench failed: {reason}");
        return Ok(false);
    }
    Ok(complete && !rows.is_empty())
}

/// Runs the hooks bench on one kernel and prints its table; false when the run failed or its
/// rounds disagree.
fn hooks(kernel: &Kernel, initrd: &Path, args: &HooksArgs) -> Result<bool> {
    let label = kernel.label();
    println!();
    println!("== kernel {} ({})", kernel.release, kernel.package);
    let mut spec = VmSpec::new(kernel, initrd, "bench");
    spec.smp = 1;
    spec.qemu_extra = vec!["-icount".into(), "shift=0,sleep=off".into()];
    spec.timeout = Duration::from_secs(args.timeout);
    if !args.verbose {
        spec.cmdline_extra.push("quiet".into());
    }

    let mut results = Results::default();
    let outcome = vm::run(&spec, &mut |line| {
        if vm::marker_value(line, vm::BOOTED_MARKER).is_some() {
            results = Results::default(); // a retried boot starts over
        }
        if args.verbose || line.starts_with("bench: ") {
            println!("[{label}] {line}");
        }
        results.feed(line);
    })?;

    println!(
        "instructions per call (icount; {:.0} s for this kernel{})",
        outcome.total_time.as_secs_f64(),
        if outcome.retried {
            ", boot retried"
        } else {
            ""
        }
    );
    let ok = results.print_table();
    if !results.0.is_empty() {
        results.print_derived();
    }
    Ok(ok & vm_ran(&outcome, &label, args))
}

/// Runs the syscall-layer bench on one kernel (icount, like `hooks`) and prints its table with
/// ratios to the no-program baseline; false when the run failed or rounds disagree.
fn syscalls(kernel: &Kernel, initrd: &Path, args: &HooksArgs) -> Result<bool> {
    let label = kernel.label();
    println!();
    println!("== kernel {} ({})", kernel.release, kernel.package);
    let mut spec = VmSpec::new(kernel, initrd, "bench");
    spec.smp = 1;
    spec.qemu_extra = vec!["-icount".into(), "shift=0,sleep=off".into()];
    spec.cmdline_extra.push("enforcer.bench=syscalls".into());
    spec.timeout = Duration::from_secs(args.timeout);
    if !args.verbose {
        spec.cmdline_extra.push("quiet".into());
    }
    let mut results = Results::default();
    let outcome = vm::run(&spec, &mut |line| {
        if vm::marker_value(line, vm::BOOTED_MARKER).is_some() {
            results = Results::default();
        }
        if args.verbose || line.starts_with("bench: ") {
            println!("[{label}] {line}");
        }
        results.feed(line);
    })?;
    println!("instructions per call (icount; mean of 2 rounds) and ratio to no programs");
    println!(
        "{:LABEL_WIDTH$} {:>9} {:>9} {:>7} {:>7}",
        "config", "round 1", "round 2", "spread", "ratio"
    );
    let mut ok = true;
    for (config, label) in SYSCALL_CONFIGS {
        let rounds = results.0.get(config).map(Vec::as_slice).unwrap_or_default();
        let base = if config.starts_with("sc-getpid") {
            "sc-getpid-none"
        } else {
            "sc-read-none"
        };
        let cell = |i: usize| rounds.get(i).map_or("-".into(), |v| format!("{v:.1}"));
        let (min, max) = rounds
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let agree = rounds.len() >= 2 && (max - min) / min <= AGREE;
        ok &= agree;
        let ratio = match (results.mean(config), results.mean(base)) {
            (Some(v), Some(b)) => format!("{:.2}x", v / b),
            _ => "-".into(),
        };
        let spread = if rounds.len() < 2 {
            "-".into()
        } else {
            format!("{:.2}%", 100.0 * (max - min) / min)
        };
        println!(
            "{label:LABEL_WIDTH$} {:>9} {:>9} {spread:>7} {ratio:>7}{}",
            cell(0),
            cell(1),
            if agree {
                ""
            } else {
                "  ROUNDS DISAGREE/MISSING"
            }
        );
    }
    Ok(ok & vm_ran(&outcome, &label, args))
}

/// Instructions per call, by config, one value per round.
#[derive(Default)]
struct Results(BTreeMap<String, Vec<f64>>);

impl Results {
    /// Takes a `BENCH <config> <round> <value>` line.
    fn feed(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("BENCH ") else {
            return;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        if let [config, _round, value] = words[..]
            && let Ok(value) = value.parse()
        {
            self.0.entry(config.to_string()).or_default().push(value);
        }
    }

    fn mean(&self, config: &str) -> Option<f64> {
        let rounds = self.0.get(config).filter(|r| !r.is_empty())?;
        Some(rounds.iter().sum::<f64>() / rounds.len() as f64)
    }

    /// One row per config with both rounds and their spread; false when a config is missing or
    /// its rounds disagree by more than [`AGREE`].
    fn print_table(&self) -> bool {
        let mut ok = true;
        println!(
            "{:LABEL_WIDTH$} {:>9} {:>9} {:>7}",
            "config", "round 1", "round 2", "spread"
        );
        for (config, label) in CONFIGS {
            let rounds = self.0.get(config).map(Vec::as_slice).unwrap_or_default();
            let cell = |i: usize| rounds.get(i).map_or("-".into(), |v| format!("{v:.1}"));
            let (min, max) = rounds
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let spread = (max - min) / min;
            let note = if rounds.len() < 2 {
                ok = false;
                "  MISSING"
            } else if spread > AGREE && !VARIABLE.contains(&config) {
                ok = false;
                "  ROUNDS DISAGREE"
            } else {
                ""
            };
            let spread = if rounds.len() < 2 {
                "-".into()
            } else {
                format!("{:.2}%", 100.0 * spread)
            };
            println!(
                "{label:LABEL_WIDTH$} {:>9} {:>9} {spread:>7}{note}",
                cell(0),
                cell(1),
            );
        }
        ok
    }

    /// What each mechanism adds to the same call, from the means of the rounds, beside the
    /// issue's targets (shown, never enforced).
    fn print_derived(&self) {
        let m = |config| self.mean(config);
        let diff = |a, b| Some(m(a)? - m(b)?);
        let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
        let enforcer = diff("outside-d1", "settime");
        let empty_settime = diff("empty-settime", "settime");
        let empty_capable = diff("empty-capable", "settime");
        // Equal within the tolerance the rounds are held to.
        let equal = |d: Option<f64>, base: Option<f64>| Some(d?.abs() <= AGREE * base?);

        println!();
        println!(
            "{:LABEL_WIDTH$} {:>9}   target (not enforced)",
            "added to settimeofday(NULL, NULL) / getpid", "instr."
        );
        let row = |label: &str, value: String, target: &str, met: Option<bool>| {
            let verdict = match met {
                Some(true) => ": met",
                Some(false) => ": MISSED",
                None => "",
            };
            println!("{label:LABEL_WIDTH$} {value:>9}   {target}{verdict}");
        };
        let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
        row(
            "enforcer, caller outside (depth 1 - nothing)",
            num(enforcer),
            "",
            None,
        );
        row("empty program on settime", num(empty_settime), "", None);
        row("empty program on capable", num(empty_capable), "", None);
        for (hook, empty) in [("settime", empty_settime), ("capable", empty_capable)] {
            let r = ratio(enforcer, empty);
            row(
                &format!("  ratio enforcer / empty on {hook}"),
                r.map_or("-".into(), |r| format!("{r:.2}x")),
                "<= 1.50x",
                r.map(|r| r <= 1.5),
            );
        }
        let d6 = diff("outside-d6", "outside-d1");
        row(
            "enforcer, caller outside: depth 6 - depth 1",
            num(d6),
            "0",
            equal(d6, m("outside-d1")),
        );
        let getpid = diff("getpid-enforcer", "getpid");
        row(
            "getpid: enforcer on - nothing",
            num(getpid),
            "0",
            equal(getpid, m("getpid")),
        );
        row(
            "enforcer deny path, no event (- nothing)",
            num(diff("denied-no-event", "settime")),
            "",
            None,
        );
        let event = diff("denied", "denied-no-event");
        row(
            "  an event without wakeup adds",
            num(event),
            "<= 250",
            event.map(|e| e <= 250.0),
        );
        row(
            "  an event with a wakeup each adds",
            num(diff("denied-wakeup", "denied-no-event")),
            "",
            None,
        );
        row(
            "seccomp refusal (seccomp - nothing)",
            num(diff("seccomp", "settime")),
            "",
            None,
        );
    }
}

/// False when the bench VM failed, after saying why (with the console's last lines unless the
/// whole console was streamed).
fn vm_ran(outcome: &vm::VmOutcome, label: &str, args: &HooksArgs) -> bool {
    let Some(reason) = outcome.failure_reason() else {
        return true;
    };
    println!("[{label}] bench failed: {reason}");
    if !args.verbose {
        for line in outcome.console.iter().rev().take(20).rev() {
            println!("[{label}] | {line}");
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_bench_lines() {
        let mut r = Results::default();
        for line in [
            "BENCH settime 1 414.0",
            "[    3.1] some kernel line",
            "BENCH settime 2 416.0",
            "BENCH getpid 1 oops",
        ] {
            r.feed(line);
        }
        assert_eq!(r.mean("settime"), Some(415.0));
        assert_eq!(r.mean("getpid"), None);
    }
}
