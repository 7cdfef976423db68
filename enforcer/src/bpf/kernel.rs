//! What the kernel must offer before programs load: root, a mounted bpffs, an active BPF LSM.
use super::LoaderError;
use crate::{
    host,
    paths::{BPF_FS, BPF_FS_MAGIC},
};

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
    if !host::is_filesystem(BPF_FS, BPF_FS_MAGIC) {
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
    match host::active_lsms() {
        Ok(active) if !host::lsm_listed(&active, "bpf") => Err(LoaderError::LsmInactive(active)),
        _ => Ok(()),
    }
}
