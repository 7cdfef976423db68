//! The filesystems `check` mounts on its way (bpffs for the pins, securityfs for the LSM list)
//! and the pin directories it creates: taken back at its end when nothing of enforcer's stays in
//! them, so that `check` leaves the machine as it found it.
use std::{fs, io, path::Path};

use nix::mount::{MntFlags, umount2};

use crate::{
    bpf,
    paths::{BPF_FS, BPF_FS_MAGIC, SECURITYFS},
};

const SECURITYFS_MAGIC: i64 = 0x7363_6673;
/// What the kernel's bpf_preload puts in every new bpffs: not anyone's pins.
const PRELOADED: [&str; 2] = ["maps.debug", "progs.debug"];

/// Which of the two filesystems were mounted when `check` started.
pub struct Mounted {
    bpffs: bool,
    securityfs: bool,
}

impl Mounted {
    pub fn now() -> Self {
        Self {
            bpffs: is(BPF_FS, BPF_FS_MAGIC),
            securityfs: is(SECURITYFS, SECURITYFS_MAGIC),
        }
    }

    /// Removes the pin directories that hold no pin, then unmounts the bpffs `check` mounted if
    /// nothing else is in it. The caller holds the [`bpf::StateLock`], so no `attach` is
    /// between creating a directory and pinning into it.
    pub fn restore_bpffs(&self, _lock: &bpf::StateLock) {
        let _ = remove_empty_dirs(Path::new(crate::paths::PIN_BASE));
        if !self.bpffs && is(BPF_FS, BPF_FS_MAGIC) && holds_nothing(Path::new(BPF_FS)) {
            let _ = umount2(BPF_FS, MntFlags::empty());
        }
    }

    /// Unmounts the securityfs `check` mounted to read the LSM list.
    pub fn restore_securityfs(&self) {
        if !self.securityfs && is(SECURITYFS, SECURITYFS_MAGIC) {
            let _ = umount2(SECURITYFS, MntFlags::empty());
        }
    }
}

fn is(path: &str, magic: i64) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 == magic)
}

/// Removes `dir` and the directories below it when none of them holds anything but directories;
/// a pin anywhere keeps it and its parents.
fn remove_empty_dirs(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            // A kept one does not keep its empty siblings.
            let _ = remove_empty_dirs(&entry.path());
        }
    }
    fs::remove_dir(dir)
}

fn holds_nothing(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .all(|entry| PRELOADED.iter().any(|name| entry.file_name() == *name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_empty_directories_and_keeps_any_with_a_file() {
        let base = std::env::temp_dir().join(format!("enforcer-leftovers-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        for sub in [
            "empty/v1/maps",
            "empty/v1/links",
            "pinned/v1/maps",
            "pinned/v1/links",
        ] {
            fs::create_dir_all(base.join(sub)).expect("mkdir");
        }
        fs::write(base.join("pinned/v1/maps/POLICIES"), b"").expect("write");
        assert!(remove_empty_dirs(&base.join("empty")).is_ok());
        assert!(!base.join("empty").exists());
        assert!(remove_empty_dirs(&base.join("pinned")).is_err());
        assert!(base.join("pinned/v1/maps/POLICIES").exists());
        assert!(
            !base.join("pinned/v1/links").exists(),
            "an empty sibling goes"
        );
        let _ = fs::remove_dir_all(&base);
    }
}
