//! Builds the BPF object (the `enforcer-ebpf` crate) with nightly and bpf-linker, and embeds it.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

const FIX: &str = "run `cargo xtask bootstrap` to install it";

fn main() {
    git_commit();
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=ENFORCER_CACHE");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // clippy and docs builds skip the BPF build; the include_bytes! still needs a file.
        fs::write(out_dir.join("enforcer-bpf"), []).expect("write stub BPF object");
        return;
    }
    if let Err(missing) = check_toolchain() {
        // One line naming the fix: cargo prints it as `error: ...` and fails the build.
        println!("cargo::error=BPF toolchain missing: {missing}; {FIX}");
        return;
    }
    // aya-build relays every line of the nested cargo's stderr as a warning; keep that to errors.
    // SAFETY: build scripts are single-threaded here; the nested cargo inherits the variable.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    let package = aya_build::Package {
        name: "enforcer-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../enforcer-ebpf"),
        ..Default::default()
    };
    if let Err(err) = aya_build::build_ebpf([package], aya_build::Toolchain::default()) {
        println!("cargo::error=building the BPF programs failed: {err:#}");
    }
}

/// Finds bpf-linker (on PATH or in the bootstrap cache, which is then put on PATH for aya-build)
/// and the nightly toolchain's rust-src, so a missing piece fails with the fix instead of a
/// linker error deep inside a nested cargo build.
fn check_toolchain() -> Result<(), String> {
    let cache_bin = cache_dir().join("bpf-linker").join("bin");
    println!("cargo:rerun-if-changed={}", cache_bin.display());
    let path = env::var_os("PATH").unwrap_or_default();
    let on_path = env::split_paths(&path).any(|dir| dir.join("bpf-linker").is_file());
    if !on_path {
        if !cache_bin.join("bpf-linker").is_file() {
            return Err(format!(
                "bpf-linker is neither on PATH nor in {}",
                cache_bin.display()
            ));
        }
        let joined = env::join_paths(std::iter::once(cache_bin).chain(env::split_paths(&path)))
            .map_err(|err| format!("cannot extend PATH: {err}"))?;
        // SAFETY: build scripts are single-threaded here; aya-build's child cargo inherits PATH.
        unsafe { env::set_var("PATH", joined) };
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .map_err(|err| format!("cannot run rustup ({err})"))?;
    if !sysroot.status.success() {
        return Err("the nightly toolchain is not installed".into());
    }
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    let library = Path::new(&sysroot).join("lib/rustlib/src/rust/library");
    if !library.is_dir() {
        return Err("the nightly toolchain has no rust-src component".into());
    }
    Ok(())
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("ENFORCER_CACHE") {
        return PathBuf::from(dir);
    }
    let home = env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("enforcer")
}

/// `ENFORCER_GIT_COMMIT` for `enforcer version`: the commit the source is at, or `unknown` when
/// git (or the repository) is not there, as in a source tarball. Rebuilt when HEAD moves.
fn git_commit() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|text| !text.is_empty())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    if commit.is_some() {
        // HEAD, and the branch it points at (paths as git resolves them, worktrees included).
        for path in ["HEAD", "refs/heads", "packed-refs"] {
            if let Some(file) = git(&["rev-parse", "--path-format=absolute", "--git-path", path]) {
                println!("cargo:rerun-if-changed={file}");
            }
        }
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
            && let Some(file) = git(&["rev-parse", "--path-format=absolute", "--git-path", &branch])
        {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    println!(
        "cargo:rustc-env=ENFORCER_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
