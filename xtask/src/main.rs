//! `cargo xtask`: bootstrap, builds, and the VM test harness for enforcer.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use xtask::guest;
use xtask::kernels::{self, Kernel, Series};
use xtask::libtest::{Report, Verdict};
use xtask::vm::{self, VmOutcome, VmSpec};
use xtask::{cmd, initramfs, sysdeps, toolchain, workspace_root};

mod bench;

#[derive(Parser)]
#[command(about = "Build, bootstrap, VM tests and benches for enforcer")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build needs (nightly rust-src, a pinned bpf-linker); no-op when present.
    Bootstrap,
    /// Bootstrap, then build the host binaries (`cargo build --release`).
    Build,
    /// Build the static binaries the VM runs (enforcer, probe, the VM test executable).
    #[command(hide = true)]
    BuildGuest,
    /// Host unit tests, then the VM tests on each kernel.
    Test(TestArgs),
    /// Boot the 6.12 kernel and run the demo script, streaming the console.
    Demo(DemoArgs),
    /// Count guest instructions per hooked system call in a VM on each kernel (`bench hooks`).
    #[command(subcommand)]
    Bench(bench::Bench),
}

#[derive(Args)]
struct TestArgs {
    /// Kernel series to test on (repeatable); default: all.
    #[arg(long = "kernel", value_enum)]
    kernels: Vec<Series>,
    /// Stream the whole VM console, not only the test lines.
    #[arg(long)]
    verbose: bool,
    /// Per-kernel limit in seconds (QEMU is killed past it).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Extra kernel command line word for the VM (repeatable), e.g. `lsm=capability`.
    #[arg(long = "kernel-arg", value_name = "WORD")]
    kernel_args: Vec<String>,
    /// Skip the host unit tests (for iterating on VM tests).
    #[arg(long, hide = true)]
    skip_host: bool,
    /// Run only VM tests whose name contains this.
    filter: Option<String>,
}

#[derive(Args)]
struct DemoArgs {
    /// Show the kernel boot log too.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Bootstrap => toolchain::bootstrap()?,
        Cmd::Build => {
            toolchain::bootstrap()?;
            cmd::run(toolchain::cargo()?.args(["build", "--release"]))?;
        }
        Cmd::BuildGuest => {
            toolchain::bootstrap()?;
            let bins = guest::build()?;
            for (guest_path, host) in bins.initramfs_entries() {
                println!("/{guest_path}: {}", host.display());
            }
        }
        Cmd::Test(args) => return test(args),
        Cmd::Demo(args) => return demo(args),
        Cmd::Bench(which) => return bench::run(which),
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything a VM run needs from the host: tools, then the guest binaries.
fn prepare_vm(mode: &str) -> Result<PathBuf> {
    sysdeps::ensure_packages(sysdeps::VM_PACKAGES)?;
    let bins = guest::build()?;
    let initrd = workspace_root().join(format!("target/vm/initramfs-{mode}.cpio"));
    initramfs::build(&initrd, &bins.initramfs_entries())?;
    Ok(initrd)
}

fn test(args: TestArgs) -> Result<ExitCode> {
    if let Some(f) = &args.filter
        && (f.is_empty() || f.contains(|c: char| c.is_whitespace() || c == '"'))
    {
        // It travels on the kernel command line, which splits on spaces.
        bail!("the test filter must be one word without spaces or quotes: {f:?}");
    }
    let mut series = Series::ALL.to_vec();
    if !args.kernels.is_empty() {
        series.retain(|s| args.kernels.contains(s));
    }

    toolchain::bootstrap()?;
    if !args.skip_host {
        eprintln!("== host unit tests");
        cmd::run(toolchain::cargo()?.args([
            "test",
            "--workspace",
            "--exclude",
            "integration-tests",
            "--exclude",
            "enforcer-ebpf",
        ]))
        .context("host unit tests failed")?;
    }
    eprintln!("== guest binaries");
    let initrd = prepare_vm("test")?;

    let mut summaries = Vec::new();
    let (mut passed, mut failed) = (0, 0);
    for s in series {
        // A kernel that cannot be had is one failure; the other kernel still runs.
        let k = match kernels::resolve(s) {
            Ok(kernel) => run_kernel_tests(&kernel, &initrd, &args)?,
            Err(e) => KernelResult {
                passed: 0,
                failed: 1,
                line: format!("[{}] no kernel: {e:#}", s.name()),
            },
        };
        passed += k.passed;
        failed += k.failed;
        summaries.push(k.line);
    }

    println!();
    println!("== summary");
    for line in &summaries {
        println!("{line}");
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

struct KernelResult {
    passed: usize,
    failed: usize,
    line: String,
}

fn run_kernel_tests(kernel: &Kernel, initrd: &Path, args: &TestArgs) -> Result<KernelResult> {
    let label = kernel.label();
    println!();
    println!("== kernel {} ({})", kernel.release, kernel.package);
    let mut spec = VmSpec::new(kernel, initrd, "test");
    spec.timeout = Duration::from_secs(args.timeout);
    if !args.verbose {
        // Errors and warnings (oopses, WARN splats) only: keeps boot chatter out of the way.
        spec.cmdline_extra.push("loglevel=5".into());
    }
    if let Some(f) = &args.filter {
        spec.cmdline_extra.push(format!("enforcer.filter={f}"));
    }
    spec.cmdline_extra.extend(args.kernel_args.iter().cloned());

    let mut report = Report::default();
    let outcome = vm::run(&spec, &mut |line| {
        let booted = vm::marker_value(line, vm::BOOTED_MARKER);
        if args.verbose {
            println!("[{label}] {line}");
        } else if let Some(release) = booted {
            println!("[{label}] {} {release}", vm::BOOTED_MARKER);
        } else if line.starts_with("lsm: ") {
            println!("[{label}] {line}");
        }
        // A retried boot starts the report over.
        if booted.is_some() {
            report = Report::default();
        }
        if let Some((name, verdict)) = report.feed(line)
            && !args.verbose
        {
            let word = match verdict {
                Verdict::Ok => "ok",
                Verdict::Failed => "FAILED",
                Verdict::Ignored => "ignored",
            };
            println!("[{label}] test {name} ... {word}");
        }
    })?;

    let tests_failed = report.count(Verdict::Failed);
    let reason = outcome.failure_reason();
    if (tests_failed > 0 || reason.is_some()) && !args.verbose {
        print_failure_details(&label, &report, &outcome, tests_failed > 0);
    }
    let passed = report.count(Verdict::Ok);
    // A run that breaks outside any test (panic, timeout, crash of the test binary) still has
    // to count as a failure.
    let failed = if tests_failed == 0 && reason.is_some() {
        1
    } else {
        tests_failed
    };

    let mut line = format!(
        "[{label}] {}: {passed} passed, {failed} failed, {} ignored",
        kernel.package,
        report.count(Verdict::Ignored)
    );
    if let Some(boot) = outcome.boot_time {
        line += &format!("; boot {:.1} s", boot.as_secs_f64());
    }
    line += &format!(", total {:.1} s", outcome.total_time.as_secs_f64());
    if outcome.retried {
        line += " (boot retried once)";
    }
    if let Some(reason) = reason {
        line += &format!(" -- {reason}");
    }
    Ok(KernelResult {
        passed,
        failed,
        line,
    })
}

/// Shows why a kernel's run failed: libtest's failure sections, then either the kernel's own
/// messages during the tests (when tests failed, the rest of the console is the same output
/// again) or the console tail (when the run itself broke).
fn print_failure_details(label: &str, report: &Report, outcome: &VmOutcome, tests_failed: bool) {
    if !report.failure_output.is_empty() {
        println!("[{label}] ---- guest failure output ----");
        for line in &report.failure_output {
            println!("[{label}] {line}");
        }
    }
    let booted_at = outcome
        .console
        .iter()
        .position(|l| l.contains(vm::BOOTED_MARKER));
    if let (true, Some(start)) = (tests_failed, booted_at) {
        // printk lines carry a `[  time]` stamp.
        let kernel: Vec<&String> = outcome.console[start..]
            .iter()
            .filter(|l| l.starts_with('[') && !l.contains("reboot: Power down"))
            .collect();
        if !kernel.is_empty() {
            println!("[{label}] ---- kernel messages during the tests ----");
            for line in kernel {
                println!("[{label}] | {line}");
            }
        }
    } else {
        // From just before the first panic/Oops line when there is one, else the tail.
        const LINES: usize = 40;
        let first_error = outcome.console.iter().position(|l| vm::is_kernel_error(l));
        let start = match first_error {
            Some(i) => i.saturating_sub(5),
            None => outcome.console.len().saturating_sub(LINES),
        };
        println!("[{label}] ---- console (from line {}) ----", start + 1);
        for line in outcome.console.iter().skip(start).take(LINES) {
            println!("[{label}] | {line}");
        }
    }
    let stderr = outcome.qemu_stderr.trim();
    if !stderr.is_empty() {
        println!("[{label}] ---- qemu stderr ----");
        for line in stderr.lines() {
            println!("[{label}] {line}");
        }
    }
}

fn demo(args: DemoArgs) -> Result<ExitCode> {
    toolchain::bootstrap()?;
    let initrd = prepare_vm("demo")?;
    let kernel = kernels::resolve(Series::V6_12)?;
    eprintln!("== booting {} (TCG, a few seconds)", kernel.release);

    let mut spec = VmSpec::new(&kernel, &initrd, "demo");
    if !args.verbose {
        spec.cmdline_extra.push("quiet".into());
    }
    let (mut booted, mut finished) = (false, false);
    let outcome = vm::run(&spec, &mut |line| {
        // Before the marker it is the kernel booting; the markers are for xtask only.
        if let Some(release) = vm::marker_value(line, vm::BOOTED_MARKER) {
            booted = true;
            println!("== booted {release}");
        } else if line.contains(vm::EXIT_MARKER) {
            finished = true; // what follows is the kernel powering off
        } else if (booted && !finished) || args.verbose {
            println!("{line}");
        }
    })?;
    match outcome.failure_reason() {
        None => Ok(ExitCode::SUCCESS),
        Some(reason) => {
            if !args.verbose && !booted {
                for line in &outcome.console {
                    println!("{line}");
                }
            }
            bail!("demo failed: {reason}")
        }
    }
}
