//! Static guest binaries: the VM has no libc, so everything is built `+crt-static` (static-pie
//! glibc) in its own target dir, which keeps host builds' fingerprints untouched.

use std::env;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{cmd, toolchain, workspace_root};

const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The second BPF object of the upgrade tests, in the guest.
pub const NEXT_BPF_GUEST_PATH: &str = "lib/enforcer-next.bpf.o";
/// The `enforcer-ebpf` feature that makes it differ from the default build in one program.
const VARIANT_FEATURE: &str = "upgrade-test-variant";
/// The benches' BPF object (feature `bench`: do-nothing programs and event switches), in the
/// guest; the bench driver loads it with `enforcer --bpf-object`. The shipped object has neither.
pub const BENCH_BPF_GUEST_PATH: &str = "lib/enforcer-bench.bpf.o";
const BENCH_FEATURE: &str = "bench";
/// The `[[bin]]` name of the BPF object in `enforcer-ebpf/Cargo.toml`.
const BPF_OBJECT_NAME: &str = "enforcer-bpf";

/// The binaries the VM runs.
#[derive(Clone, Debug)]
pub struct GuestBins {
    pub enforcer: PathBuf,
    pub probe: PathBuf,
    /// The bench driver (`tests/src/bin/bench.rs`).
    pub bench: PathBuf,
    /// The integration-tests libtest executable.
    pub vmtests: PathBuf,
    /// A libc-free program the runtime tests put in a container image as its ELF interpreter
    /// (`tests/fixtures/fakeld.c`).
    pub fakeld: PathBuf,
    /// A second BPF object whose `capable` program differs from the embedded one's (feature
    /// `upgrade-test-variant`): the upgrade tests run it as another build through the hidden
    /// `enforcer --bpf-object`.
    pub bpf_next: Option<PathBuf>,
    /// The benches' BPF object (see [`BENCH_BPF_GUEST_PATH`]).
    pub bpf_bench: Option<PathBuf>,
}

impl GuestBins {
    /// `(path in the guest, host file)` pairs for the initramfs.
    pub fn initramfs_entries(&self) -> Vec<(&'static str, &Path)> {
        let mut entries: Vec<(&'static str, &Path)> = vec![
            ("bin/enforcer", &self.enforcer),
            ("bin/probe", &self.probe),
            ("bin/bench", &self.bench),
            ("bin/vmtests", &self.vmtests),
            ("bin/fakeld", &self.fakeld),
        ];
        if let Some(object) = &self.bpf_next {
            entries.push((NEXT_BPF_GUEST_PATH, object));
        }
        if let Some(object) = &self.bpf_bench {
            entries.push((BENCH_BPF_GUEST_PATH, object));
        }
        entries
    }
}

/// The enforcer feature that adds the hidden test options and bench commands (`--bpf-object`,
/// `--test-abi`, `bench-events`, `bench-empty`) the VM tests and benches use. The shipped binary
/// has none of them.
const TESTING_FEATURE: &str = "enforcer/testing";

/// Builds the guest binaries, or takes them from `$ENFORCER_GUEST_BINS` (a directory holding
/// `enforcer`, `probe`, `bench` and `vmtests`, and optionally `enforcer-next.bpf.o`; for testing
/// the harness itself). With `testing`, the guest `enforcer` has the test-only options (VM tests
/// and benches); without, it is the shipped binary (the demo).
pub fn build(testing: bool) -> Result<GuestBins> {
    if let Some(dir) = env::var_os("ENFORCER_GUEST_BINS").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        eprintln!(
            "build-guest: using prebuilt binaries from {} (ENFORCER_GUEST_BINS)",
            dir.display()
        );
        return Ok(GuestBins {
            enforcer: dir.join("enforcer"),
            probe: dir.join("probe"),
            bench: dir.join("bench"),
            vmtests: dir.join("vmtests"),
            fakeld: dir.join("fakeld"),
            bpf_next: Some(dir.join("enforcer-next.bpf.o")).filter(|p| p.is_file()),
            bpf_bench: Some(dir.join("enforcer-bench.bpf.o")).filter(|p| p.is_file()),
        });
    }

    let mut bins = toolchain::cargo()?;
    bins.args(["build", "--release"])
        .args(["-p", "enforcer", "--bin", "enforcer"])
        .args([
            "-p",
            "integration-tests",
            "--bin",
            "probe",
            "--bin",
            "bench",
        ]);
    if testing {
        bins.args(["--features", TESTING_FEATURE]);
    }
    let (built, enforcer_out_dir) = cargo_json(bins)?;
    let exe = |name: &str| {
        built
            .iter()
            .find(|a| a.name == name && !a.test)
            .map(|a| a.executable.clone())
            .with_context(|| format!("cargo built no `{name}` executable"))
    };
    let enforcer = exe("enforcer")?;
    let probe = exe("probe")?;
    let bench = exe("bench")?;

    let mut tests = toolchain::cargo()?;
    tests
        .args(["test", "--release", "--no-run"])
        .args(["-p", "integration-tests", "--lib"]);
    let vmtests = cargo_json(tests)?
        .0
        .into_iter()
        .find(|a| a.test)
        .map(|a| a.executable)
        .context("cargo built no integration-tests test executable")?;
    let bpf_next = build_bpf_object(
        enforcer_out_dir.as_deref(),
        VARIANT_FEATURE,
        "enforcer-next",
    )?;
    let bpf_bench = build_bpf_object(enforcer_out_dir.as_deref(), BENCH_FEATURE, "enforcer-bench")?;
    Ok(GuestBins {
        enforcer,
        probe,
        bench,
        vmtests,
        fakeld: build_fakeld()?,
        bpf_next: Some(bpf_next),
        bpf_bench: Some(bpf_bench),
    })
}

/// Builds the fake ELF interpreter of the runtime tests with the C compiler Rust links with: no
/// libc, static, not position-independent (a kernel-loaded interpreter is never relocated).
fn build_fakeld() -> Result<PathBuf> {
    let source = workspace_root().join("tests/fixtures/fakeld.c");
    let out = workspace_root().join("target/guest/fakeld");
    let mut cc = Command::new("cc");
    cc.args([
        "-static",
        "-nostdlib",
        "-fno-pie",
        "-no-pie",
        "-O2",
        "-fno-stack-protector",
    ])
    .arg("-o")
    .arg(&out)
    .arg(&source);
    cmd::run(&mut cc)
        .context("cannot build tests/fixtures/fakeld.c (is a C compiler installed?)")?;
    Ok(out)
}

/// Builds another BPF object: `enforcer-ebpf` with `feature` (the upgrade tests' second build,
/// the benches' object), exactly as aya-build builds the embedded one (same toolchain, flags and target), in
/// aya-build's own target directory under the guest `enforcer` build script's `OUT_DIR` when
/// there is one. There only the final crate is compiled again (a few seconds): the core library
/// and every dependency are shared, and cargo keeps both feature sets' artifacts, so neither
/// build makes the other recompile. Copied out to `target/vm/<name>.bpf.o`.
fn build_bpf_object(enforcer_out_dir: Option<&Path>, feature: &str, name: &str) -> Result<PathBuf> {
    // aya-build 0.2.0's layout and flags (see its `build_ebpf`); should they ever differ, the
    // fallback directory still gives a correct object, only a slower first build.
    let shared = enforcer_out_dir.map(|dir| dir.join("aya-build/target/enforcer-ebpf"));
    let target_dir = shared
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| workspace_root().join("target/bpf-variant"));
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo", "build"])
        .args(["--package", "enforcer-ebpf", "--bins", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--features", feature])
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace_root())
        .env("PATH", toolchain::bpf_env()?)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "--cfg=bpf_target_arch=\"x86_64\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf",
        )
        // The dependencies' build scripts rerun when HOST changes; aya-build's nested cargo
        // inherits it from the enforcer build script, so set the same value here.
        .env("HOST", host_triple()?)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .stdout(Stdio::piped());
    let (built, _) = run_json(c)?;
    let object = built
        .iter()
        .find(|a| a.name == BPF_OBJECT_NAME)
        .map(|a| a.executable.clone())
        .with_context(|| {
            format!("cargo built no `{BPF_OBJECT_NAME}` BPF object with the {feature} feature")
        })?;
    let out = workspace_root().join(format!("target/vm/{name}.bpf.o"));
    std::fs::create_dir_all(out.parent().expect("has a parent"))?;
    std::fs::copy(&object, &out)
        .with_context(|| format!("cannot copy {} to {}", object.display(), out.display()))?;
    Ok(out)
}

struct Artifact {
    name: String,
    test: bool,
    executable: PathBuf,
}

/// The host's target triple, as cargo gives it to build scripts in `HOST`.
fn host_triple() -> Result<String> {
    let version = cmd::output(Command::new("rustc").arg("-vV"))?;
    version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(|host| host.trim().to_owned())
        .context("`rustc -vV` names no host")
}

/// Runs a cargo build for the guest target and returns the executables it reports, and the
/// `OUT_DIR` of the `enforcer` build script when it ran (or was fresh) in this build.
fn cargo_json(mut c: Command) -> Result<(Vec<Artifact>, Option<PathBuf>)> {
    let target_dir = workspace_root().join("target/guest");
    c.args(["--target", GUEST_TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        // Diagnostics rendered on stderr as usual; stdout carries only the JSON messages.
        .arg("--message-format=json-render-diagnostics")
        // With an explicit --target, RUSTFLAGS reaches only target code, not build scripts.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdout(Stdio::piped());
    run_json(c)
}

/// Runs a cargo build with `--message-format=json*` (stdout piped) and collects its executables
/// and the `enforcer` build script's `OUT_DIR`.
fn run_json(mut c: Command) -> Result<(Vec<Artifact>, Option<PathBuf>)> {
    let shown = cmd::display(&c);
    eprintln!("$ {shown}");
    let mut child = c
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let mut artifacts = Vec::new();
    let mut enforcer_out_dir = None;
    let stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
    for line in stdout.lines() {
        let msg: Value = match serde_json::from_str(&line?) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if msg["reason"] == "build-script-executed"
            && msg["package_id"]
                .as_str()
                .is_some_and(|id| id.contains("/enforcer#"))
        {
            enforcer_out_dir = msg["out_dir"].as_str().map(PathBuf::from);
        }
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        artifacts.push(Artifact {
            name: msg["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            test: msg["profile"]["test"].as_bool().unwrap_or(false),
            executable: PathBuf::from(exe),
        });
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("guest build failed ({status}): see the compiler output above");
    }
    Ok((artifacts, enforcer_out_dir))
}
