//! `cargo xtask lint`: formatting, clippy for the host crates and for the BPF crate (which needs
//! its own target and nightly), and the docs with broken links denied. CI runs it before the
//! tests; every step denies warnings, so a lint is fixed (or allowed with a reason) where it is.
use std::process::Command;

use anyhow::{Context, Result};
use xtask::{cmd, toolchain};

pub fn run() -> Result<()> {
    toolchain::bootstrap()?;
    eprintln!("== lint: rustfmt");
    cmd::run(toolchain::cargo()?.args(["fmt", "--all", "--check"]))
        .context("the tree is not formatted: run `cargo fmt`")?;

    eprintln!("== lint: clippy (host crates)");
    // The BPF object is not needed to lint user space; build.rs skips it with AYA_BUILD_SKIP.
    cmd::run(toolchain::cargo()?.env("AYA_BUILD_SKIP", "1").args([
        "clippy",
        "--workspace",
        "--exclude",
        "enforcer-ebpf",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;

    eprintln!("== lint: clippy (BPF crate, shipped object and bench object)");
    toolchain::ensure_nightly_component("clippy", "the BPF crate's lint")?;
    for features in [&[][..], &["--features", "bench"][..]] {
        cmd::run(
            nightly_cargo()?
                .args([
                    "clippy",
                    "-p",
                    "enforcer-ebpf",
                    "--target",
                    "bpfel-unknown-none",
                    "-Zbuild-std=core",
                    "--release",
                ])
                .args(features)
                .args(["--", "-D", "warnings"]),
        )?;
    }

    eprintln!("== lint: docs (private items, broken links denied)");
    cmd::run(
        toolchain::cargo()?
            .env("AYA_BUILD_SKIP", "1")
            .env("RUSTDOCFLAGS", "-D warnings")
            .args([
                "doc",
                "--no-deps",
                "--document-private-items",
                "-p",
                "enforcer",
                "-p",
                "enforcer-common",
                "-p",
                "xtask",
            ]),
    )?;
    eprintln!("== lint: clean");
    Ok(())
}

/// `cargo +nightly` in the workspace root, with the pinned bpf-linker on PATH.
fn nightly_cargo() -> Result<Command> {
    let mut c = Command::new("cargo");
    c.arg("+nightly")
        .current_dir(xtask::workspace_root())
        .env("PATH", toolchain::bpf_env()?)
        // The outer `cargo xtask` sets these for the stable toolchain.
        .env_remove("RUSTC")
        .env_remove("CARGO");
    Ok(c)
}
