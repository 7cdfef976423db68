//! Debian packages the VM harness needs on the host, installed with apt when we are root.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

use crate::cmd;

/// Packages the VM runner needs: QEMU itself, and a *static* busybox (the guest has no libc).
pub const VM_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static"];

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Runs `apt-get update` at most once per xtask run (it is slow and both package installs and
/// kernel resolution may want it).
pub fn apt_update_once() -> Result<()> {
    if APT_UPDATED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!("the apt package lists look stale; run `sudo apt-get update` and retry");
    }
    cmd::run(Command::new("apt-get").args(["update"]))
}

/// True when dpkg reports `pkg` as installed.
pub fn is_installed(pkg: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", pkg]))
        .map(|s| s.trim() == "installed")
        .unwrap_or(false)
}

/// Installs whichever of `pkgs` is missing (as root), or fails with the exact command to run.
pub fn ensure_packages(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!("apt-get install -y {}", missing.join(" "));
    if !cmd::is_root() {
        bail!("missing host packages {missing:?}: run `sudo apt-get update && sudo {install}`");
    }
    eprintln!("installing missing host packages: {}", missing.join(" "));
    apt_update_once()?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
