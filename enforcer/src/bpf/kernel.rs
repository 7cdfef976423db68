//! What the kernel must offer before programs load: root, a mounted bpffs, an active BPF LSM.
use std::{fs, io, path::Path};

use super::LoaderError;
use crate::paths::{BPF_FS, BPF_FS_MAGIC, SECURITYFS};

/// Mounts bpffs if needed and checks that BPF LSM is active.
pub(super) fn prepare_kernel() -> Result<(), LoaderError> {
    ensure_bpffs()?;
    check_lsm_active()
}

pub(super) fn require_root() -> Result<(), LoaderError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(LoaderError::NotPrivileged)
    }
}

pub(super) fn ensure_bpffs() -> Result<(), LoaderError> {
    let is_bpffs =
        nix::sys::statfs::statfs(BPF_FS).is_ok_and(|fs| fs.filesystem_type().0 == BPF_FS_MAGIC);
    if !is_bpffs {
        nix::mount::mount(
            Some("bpf"),
            BPF_FS,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|errno| {
            LoaderError::io(format!("cannot mount bpffs on {BPF_FS}"), errno.into())
        })?;
    }
    Ok(())
}

/// Reads the active LSM list, mounting securityfs if needed. When the list cannot be read at all,
/// the program load below is the judge.
fn check_lsm_active() -> Result<(), LoaderError> {
    match active_lsms() {
        Ok(active) if !active.split(',').any(|lsm| lsm == "bpf") => {
            Err(LoaderError::LsmInactive(active))
        }
        _ => Ok(()),
    }
}

/// The active LSM list (`/sys/kernel/security/lsm`, comma separated, trimmed), mounting
/// securityfs there first if it is not mounted.
pub fn active_lsms() -> io::Result<String> {
    let list = Path::new(SECURITYFS).join("lsm");
    if !list.exists() {
        let _ = nix::mount::mount(
            Some("securityfs"),
            SECURITYFS,
            Some("securityfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    fs::read_to_string(&list).map(|active| active.trim().to_owned())
}
