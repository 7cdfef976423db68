//! `cargo xtask`: bootstrap, builds, and the VM test harness for enforcer.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use xtask::kernels::{self, Kernel, Series};
use xtask::libtest::{Report, Verdict};
use xtask::vm::{self, VmOutcome, VmSpec};
use xtask::{cmd, initramfs, k8s, runtimes, sysdeps, toolchain, workspace_root};
use xtask::{crds, guest, image};

mod bench;
mod lint;

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
    /// Write the Kubernetes CRDs generated from the Rust types to deploy/crds.yaml.
    Crds,
    /// Build the container image (static enforcer, FROM scratch) as an OCI archive under
    /// target/image/, for `ctr images import` or `podman load`.
    Image,
    /// rustfmt, clippy (host crates and the BPF crate) and the docs, warnings denied.
    Lint,
    /// Build (once, then cached) etcd and Kubernetes 1.20 for the tests; print where they are.
    K8s,
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
    #[arg(long, default_value_t = 1200)]
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
            install_docs()?;
        }
        Cmd::BuildGuest => {
            toolchain::bootstrap()?;
            let bins = guest::build(true)?;
            for (guest_path, host) in bins.initramfs_entries() {
                println!("/{guest_path}: {}", host.display());
            }
        }
        Cmd::Crds => crds::write()?,
        Cmd::Image => {
            toolchain::bootstrap()?;
            let archive = image::build(env!("CARGO_PKG_VERSION"))?;
            println!("{}", archive.display());
        }
        Cmd::Lint => lint::run()?,
        Cmd::K8s => k8s::print_paths()?,
        Cmd::Test(args) => return test(args),
        Cmd::Demo(args) => return demo(args),
        Cmd::Bench(which) => return bench::run(which),
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything a VM run needs from the host: tools, then the guest binaries.
fn prepare_vm(mode: &str) -> Result<PathBuf> {
    Ok(prepare_vm_bins(mode)?.0)
}

/// [`prepare_vm`], also returning the guest binaries.
fn prepare_vm_bins(mode: &str) -> Result<(PathBuf, guest::GuestBins)> {
    sysdeps::ensure_packages(sysdeps::VM_PACKAGES)?;
    // The demo runs the shipped binary; tests and benches need its test-only options.
    let bins = guest::build(mode != "demo")?;
    let initrd = workspace_root().join(format!("target/vm/initramfs-{mode}.cpio"));
    let mut entries = bins.initramfs_entries();
    // The runtime tests' runc and crun with their libraries (test boots only: the image grows
    // by a dozen megabytes).
    let runtimes = if mode == "test" {
        runtimes::initramfs_entries()?
    } else {
        Vec::new()
    };
    entries.extend(
        runtimes
            .iter()
            .map(|(guest, host)| (guest.as_str(), host.as_path())),
    );
    initramfs::build(&initrd, &entries)?;
    Ok((initrd, bins))
}

/// Tests with this in their name need a kernel booted without BPF LSM: the main boot skips them,
/// and a boot of their own runs them with [`LSM_WITHOUT_BPF`].
const NOBPF: &str = "nobpf::";
const LSM_WITHOUT_BPF: &str = "lockdown,capability,landlock";

/// One boot of a kernel: its LSMs and which tests it runs.
#[derive(Debug, PartialEq, Eq)]
struct Boot {
    /// Added to the output label (`[6.12.117 lsm-without-bpf]`); empty for the main boot.
    tag: &'static str,
    lsm: &'static str,
    /// libtest filters (a test runs when it matches any); exact names when `exact`.
    filters: Vec<String>,
    exact: bool,
    /// libtest `--skip` patterns.
    skips: Vec<String>,
}

/// The boots each kernel needs for the tests matching `filter`, given every VM test's name: the
/// main boot for the tests that need BPF LSM, and one without it for the `nobpf::` tests. A boot
/// with nothing to run is left out.
fn plan_boots(filter: Option<&str>, names: &[String]) -> Result<Vec<Boot>> {
    let wanted = |name: &&String| filter.is_none_or(|f| name.contains(f));
    let main = names
        .iter()
        .filter(wanted)
        .filter(|n| !n.contains(NOBPF))
        .count();
    let nobpf: Vec<String> = names
        .iter()
        .filter(wanted)
        .filter(|n| n.contains(NOBPF))
        .cloned()
        .collect();
    if main == 0 && nobpf.is_empty() {
        bail!("no VM test matches {:?}", filter.unwrap_or_default());
    }
    let mut boots = Vec::new();
    if main > 0 {
        boots.push(Boot {
            tag: "",
            lsm: vm::LSM_WITH_BPF,
            filters: filter.map(str::to_owned).into_iter().collect(),
            exact: false,
            skips: vec![NOBPF.to_owned()],
        });
    }
    if !nobpf.is_empty() {
        // A filter can match more than nobpf tests: name them exactly.
        let (filters, exact) = match filter {
            None => (vec![NOBPF.to_owned()], false),
            Some(_) => (nobpf, true),
        };
        boots.push(Boot {
            tag: "lsm-without-bpf",
            lsm: LSM_WITHOUT_BPF,
            filters,
            exact,
            skips: Vec::new(),
        });
    }
    Ok(boots)
}

/// Writes the man pages and the shell completions of the release binary beside it, and says
/// where everything is.
fn install_docs() -> Result<()> {
    let release = workspace_root().join("target/release");
    let enforcer = release.join("enforcer");
    let man = release.join("man/man8");
    cmd::output(Command::new(&enforcer).arg("man").arg("--dir").arg(&man))?;
    let completions = release.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("cannot create {}", completions.display()))?;
    for (shell, file) in [
        ("bash", "enforcer.bash"),
        ("zsh", "_enforcer"),
        ("fish", "enforcer.fish"),
    ] {
        let script = cmd::output(Command::new(&enforcer).args(["completion", shell]))?;
        let path = completions.join(file);
        std::fs::write(&path, script)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "built {}
man pages in {} (`man -l {}/enforcer.8`)
completions in {} (bash: `source {}/enforcer.bash`)",
        enforcer.display(),
        man.display(),
        man.display(),
        completions.display(),
        completions.display()
    );
    Ok(())
}

/// Every test in the VM test executable (it is a static x86_64 binary: it lists on the host).
fn list_vm_tests(vmtests: &Path) -> Result<Vec<String>> {
    let list = cmd::output(Command::new(vmtests).args(["--list", "--format", "terse"]))?;
    Ok(list
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}

fn test(args: TestArgs) -> Result<ExitCode> {
    if let Some(f) = &args.filter
        && (f.is_empty() || f.contains(|c: char| c.is_whitespace() || c == '"' || c == ','))
    {
        // It travels on the kernel command line, which splits on spaces, in a comma list.
        bail!("the test filter must be one word without spaces, quotes or commas: {f:?}");
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
        // The syscall layer's tests run natively: raw tracepoints attach on kernels that refuse
        // BPF LSM (they skip themselves, saying so, when not run as root).
        eprintln!("== host syscall-layer tests (native, as root)");
        cmd::run(toolchain::cargo()?.args(["build", "-p", "enforcer", "--bin", "enforcer"]))
            .context("building enforcer for the native tests failed")?;
        cmd::run(toolchain::cargo()?.args([
            "test",
            "-p",
            "integration-tests",
            "--test",
            "host_syscall",
            // The operator's CLI: signals, paths, leftovers (each in a bpffs of its own), then
            // completions and the man page.
            "--test",
            "host_ops",
            "--test",
            "host_cli",
            // The daemon without BPF LSM: probes, metrics, two tails.
            "--test",
            "host_daemon",
        ]))
        .context("native syscall-layer tests failed")?;
        eprintln!("== host control-plane tests (etcd and kube-apiserver on loopback)");
        k8s::run_host_tests()?;
    }
    eprintln!("== guest binaries");
    let (initrd, bins) = prepare_vm_bins("test")?;
    eprintln!("== container image (the guest enforcer as an OCI archive, read by skopeo)");
    // Beside the VM's files: target/image holds `cargo xtask image`'s archive, built from the
    // enforcer alone.
    let archive = image::write(&bins.enforcer, env!("CARGO_PKG_VERSION"), "target/vm/image")?;
    image::check(&archive, true)?;
    let boots = plan_boots(args.filter.as_deref(), &list_vm_tests(&bins.vmtests)?)?;

    let mut summaries = Vec::new();
    let (mut passed, mut failed) = (0, 0);
    for s in series {
        // A kernel that cannot be had is one failure; the other kernel still runs.
        let kernel = match kernels::resolve(s) {
            Ok(kernel) => kernel,
            Err(e) => {
                failed += 1;
                summaries.push(format!("[{}] no kernel: {e:#}", s.name()));
                continue;
            }
        };
        for boot in &boots {
            let k = run_kernel_tests(&kernel, &initrd, &args, boot)?;
            passed += k.passed;
            failed += k.failed;
            summaries.push(k.line);
        }
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

fn run_kernel_tests(
    kernel: &Kernel,
    initrd: &Path,
    args: &TestArgs,
    boot: &Boot,
) -> Result<KernelResult> {
    let label = match boot.tag {
        "" => kernel.label(),
        tag => format!("{} {tag}", kernel.label()),
    };
    println!();
    println!(
        "== kernel {} ({}), lsm={}",
        kernel.release, kernel.package, boot.lsm
    );
    let mut spec = VmSpec::new(kernel, initrd, "test");
    spec.timeout = Duration::from_secs(args.timeout);
    spec.lsm = boot.lsm.to_owned();
    if !args.verbose {
        // Errors and warnings (oopses, WARN splats) only: keeps boot chatter out of the way.
        spec.cmdline_extra.push("loglevel=5".into());
    }
    if !boot.filters.is_empty() {
        spec.cmdline_extra
            .push(format!("enforcer.filter={}", boot.filters.join(",")));
    }
    if !boot.skips.is_empty() {
        spec.cmdline_extra
            .push(format!("enforcer.skip={}", boot.skips.join(",")));
    }
    if boot.exact {
        spec.cmdline_extra.push("enforcer.exact=1".into());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        [
            "check::json",
            "check::nobpf::attach",
            "check::nobpf::check",
            "matrix::x::deny",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    #[test]
    fn nobpf_tests_get_a_boot_of_their_own() {
        let boots = plan_boots(None, &names()).unwrap();
        assert_eq!(boots.len(), 2);
        assert_eq!(boots[0].lsm, vm::LSM_WITH_BPF);
        assert_eq!(boots[0].skips, ["nobpf::"]);
        assert!(boots[0].filters.is_empty());
        assert_eq!(boots[1].lsm, LSM_WITHOUT_BPF);
        assert_eq!(boots[1].tag, "lsm-without-bpf");
        assert_eq!(boots[1].filters, ["nobpf::"]);
        assert!(!boots[1].exact);
    }

    #[test]
    fn a_filter_picks_boots_and_exact_nobpf_names() {
        let boots = plan_boots(Some("check"), &names()).unwrap();
        assert_eq!(boots[0].filters, ["check"]);
        assert_eq!(
            boots[1].filters,
            ["check::nobpf::attach", "check::nobpf::check"]
        );
        assert!(boots[1].exact);

        let only_main = plan_boots(Some("matrix"), &names()).unwrap();
        assert_eq!(only_main.len(), 1);
        assert_eq!(only_main[0].tag, "");

        let only_nobpf = plan_boots(Some("nobpf::attach"), &names()).unwrap();
        assert_eq!(only_nobpf.len(), 1);
        assert_eq!(only_nobpf[0].filters, ["check::nobpf::attach"]);

        assert!(plan_boots(Some("nothing"), &names()).is_err());
    }
}
