//! Toolchain bootstrap: nightly + rust-src (for `-Z build-std=core` on the BPF target) and a
//! `bpf-linker` built against nightly rustc's own libLLVM, installed into a cache we own.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd;

/// Pinned so a new bpf-linker release cannot silently change how the BPF object is linked.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// The project cache: `$ENFORCER_CACHE`, else `$HOME/.cache/enforcer`. Holds bpf-linker and the
/// downloaded kernels; the enforcer crate's build.rs looks for bpf-linker at the same place.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("ENFORCER_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither ENFORCER_CACHE nor HOME is set: set ENFORCER_CACHE=<dir>")?;
    Ok(PathBuf::from(home).join(".cache/enforcer"))
}

fn bpf_linker_root() -> Result<PathBuf> {
    Ok(cache_dir()?.join("bpf-linker"))
}

/// `PATH` with `<cache>/bpf-linker/bin` in front: set it on every cargo invocation that may
/// build the BPF object, so the pinned bpf-linker wins over anything else on PATH.
pub fn bpf_env() -> Result<OsString> {
    let bin = bpf_linker_root()?.join("bin");
    let rest = env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(bin).chain(env::split_paths(&rest));
    env::join_paths(paths).context("a PATH entry contains ':'; cannot prepend the bpf-linker dir")
}

/// `cargo` as the caller ran it (the outer `cargo xtask`), in the workspace root, with the
/// [`bpf_env`] PATH: use it for every build that may compile the BPF object.
pub fn cargo() -> Result<Command> {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(crate::workspace_root())
        .env("PATH", bpf_env()?);
    Ok(c)
}

/// Makes sure everything the build needs is present; prints each check, changes nothing when
/// all is in place.
pub fn bootstrap() -> Result<()> {
    let version =
        cmd::output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]))
            .context(
                "the nightly toolchain is missing (the BPF crate needs it): \
             run `rustup toolchain install nightly --profile minimal`",
            )?;
    eprintln!("bootstrap: nightly toolchain: {}", version.trim());

    ensure_rust_src()?;
    ensure_bpf_linker()
}

fn ensure_rust_src() -> Result<()> {
    ensure_nightly_component("rust-src", "needed by -Z build-std=core")
}

/// Makes sure nightly has `component` (`rust-src`, `clippy`), installing it when missing;
/// `why` says what needs it.
pub fn ensure_nightly_component(component: &str, why: &str) -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if installed.lines().any(|l| l.trim().starts_with(component)) {
        eprintln!("bootstrap: {component} for nightly: present");
        return Ok(());
    }
    eprintln!("bootstrap: {component} for nightly: installing ({why})");
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        component,
        "--toolchain",
        "nightly",
    ]))
    .with_context(|| format!("cannot install {component} for nightly: run `rustup component add {component} --toolchain nightly`"))
}

/// Nightly's libLLVM: its directory and file name (e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`).
struct NightlyLlvm {
    lib_dir: PathBuf,
    file: String,
    major: u32,
}

fn nightly_llvm() -> Result<NightlyLlvm> {
    let sysroot = cmd::output(
        Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]),
    )?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let mut candidates: Vec<String> = fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("libLLVM.so.") && name.contains("-rust-"))
        .collect();
    candidates.sort();
    let Some(file) = candidates.pop() else {
        bail!(
            "no libLLVM.so.*-rust-* in {}: reinstall nightly with `rustup toolchain install nightly --force`",
            lib_dir.display()
        );
    };
    // libLLVM.so.<major>.<minor>-rust-...: the major picks bpf-linker's llvm-sys feature.
    let major = file
        .strip_prefix("libLLVM.so.")
        .and_then(|rest| rest.split(['.', '-']).next())
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot read the LLVM major version from {file}"))?;
    Ok(NightlyLlvm {
        lib_dir,
        file,
        major,
    })
}

fn ensure_bpf_linker() -> Result<()> {
    let root = bpf_linker_root()?;
    let bin = root.join("bin/bpf-linker");
    // Running it (not just checking the file) catches a nightly update that removed the libLLVM
    // it was linked against (through its rpath).
    if bin.exists() {
        match cmd::output(Command::new(&bin).arg("--version")) {
            Ok(v) if v.contains(BPF_LINKER_VERSION) => {
                eprintln!(
                    "bootstrap: bpf-linker: present ({}, {})",
                    v.trim(),
                    bin.display()
                );
                return Ok(());
            }
            Ok(v) => eprintln!(
                "bootstrap: bpf-linker: {} is not the pinned {BPF_LINKER_VERSION}; reinstalling",
                v.trim()
            ),
            Err(e) => eprintln!("bootstrap: bpf-linker: present but broken ({e:#}); reinstalling"),
        }
    }

    let llvm = nightly_llvm()?;
    eprintln!(
        "bootstrap: bpf-linker {BPF_LINKER_VERSION}: building against nightly's {} into {} (about a minute)",
        llvm.file,
        root.display()
    );
    // bpf-linker's default feature wants a system LLVM of the newest major. Instead link it
    // against the libLLVM that ships with nightly rustc (same LLVM that emits our BPF bitcode),
    // and record an rpath so it finds that library at run time.
    let nl = llvm.lib_dir.display();
    let rustflags = format!(
        "-C link-arg=-L{nl} -C link-arg=-l:{} -C link-arg=-Wl,-rpath,{nl}",
        llvm.file
    );
    cmd::run(
        Command::new("rustup")
            .args(["run", "nightly", "cargo", "install", "bpf-linker"])
            .args(["--version", BPF_LINKER_VERSION, "--locked", "--force"])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{},no-llvm-linking", llvm.major))
            .arg("--root")
            .arg(&root)
            .env("RUSTFLAGS", rustflags)
            // Set by the outer `cargo run`; they would leak into the nested install otherwise.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR"),
    )
    .context("building bpf-linker failed: see the cargo output above")?;
    let v = cmd::output(Command::new(&bin).arg("--version"))?;
    eprintln!("bootstrap: bpf-linker: installed {}", v.trim());
    Ok(())
}
