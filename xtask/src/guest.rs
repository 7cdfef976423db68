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

/// The binaries the VM runs.
#[derive(Clone, Debug)]
pub struct GuestBins {
    pub enforcer: PathBuf,
    pub probe: PathBuf,
    /// The bench driver (`tests/src/bin/bench.rs`).
    pub bench: PathBuf,
    /// The integration-tests libtest executable.
    pub vmtests: PathBuf,
}

impl GuestBins {
    /// `(path in the guest, host file)` pairs for the initramfs.
    pub fn initramfs_entries(&self) -> [(&'static str, &Path); 4] {
        [
            ("bin/enforcer", &self.enforcer),
            ("bin/probe", &self.probe),
            ("bin/bench", &self.bench),
            ("bin/vmtests", &self.vmtests),
        ]
    }
}

/// Builds the guest binaries, or takes them from `$ENFORCER_GUEST_BINS` (a directory holding
/// `enforcer`, `probe`, `bench` and `vmtests`; for testing the harness itself).
pub fn build() -> Result<GuestBins> {
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
    let built = cargo_json(bins)?;
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
        .into_iter()
        .find(|a| a.test)
        .map(|a| a.executable)
        .context("cargo built no integration-tests test executable")?;
    Ok(GuestBins {
        enforcer,
        probe,
        bench,
        vmtests,
    })
}

struct Artifact {
    name: String,
    test: bool,
    executable: PathBuf,
}

/// Runs a cargo build for the guest target and returns the executables it reports.
fn cargo_json(mut c: Command) -> Result<Vec<Artifact>> {
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
    let shown = cmd::display(&c);
    eprintln!("$ {shown}");
    let mut child = c
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let mut artifacts = Vec::new();
    let stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
    for line in stdout.lines() {
        let msg: Value = match serde_json::from_str(&line?) {
            Ok(v) => v,
            Err(_) => continue,
        };
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
    Ok(artifacts)
}
