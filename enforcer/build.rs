//! Builds the BPF object (the `enforcer-ebpf` crate) with nightly and bpf-linker, and embeds it.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

const FIX: &str = "run `cargo xtask bootstrap` to install it";

fn main() {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=ENFORCER_CACHE");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // clippy and docs builds skip the BPF build; the include_bytes! still needs a file.
        fs::write(out_dir.join("enforcer"), []).expect("write stub BPF object");
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
