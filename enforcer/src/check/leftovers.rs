//! What `check` leaves behind, taken back so that it leaves the machine as it found it: the
//! self-test's cgroup, policy, mount directory, key and (when it installed them) programs, the
//! cgroups of an earlier `check` that was killed, the filesystems it mounts on its way (bpffs for
//! the pins, securityfs for the LSM list) and the pin directories it creates.
use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use nix::mount::{MntFlags, umount2};

use super::remove_policy;
use crate::{
    bpf,
    host::{self, SECURITYFS_MAGIC},
    paths::{self, BPF_FS, BPF_FS_MAGIC, SECURITYFS},
};

const KEYCTL_INVALIDATE: libc::c_long = 21;
/// What the kernel's bpf_preload puts in every new bpffs: not anyone's pins.
const PRELOADED: [&str; 2] = ["maps.debug", "progs.debug"];

/// Which of the two filesystems were mounted when `check` started.
pub(super) struct Mounted {
    bpffs: bool,
    securityfs: bool,
}

impl Mounted {
    pub(super) fn now() -> Self {
        Self {
            bpffs: host::is_filesystem(BPF_FS, BPF_FS_MAGIC),
            securityfs: host::is_filesystem(SECURITYFS, SECURITYFS_MAGIC),
        }
    }

    /// Removes the pin directories that hold no pin, then unmounts the bpffs `check` mounted if
    /// nothing else is in it. The caller holds the [`bpf::StateLock`], so no `attach` is
    /// between creating a directory and pinning into it.
    pub(super) fn restore_bpffs(&self, _lock: &bpf::StateLock) {
        let _ = remove_empty_dirs(Path::new(paths::PIN_BASE));
        if !self.bpffs
            && host::is_filesystem(BPF_FS, BPF_FS_MAGIC)
            && holds_nothing(Path::new(BPF_FS))
        {
            let _ = umount2(BPF_FS, MntFlags::empty());
        }
    }

    /// Unmounts the securityfs `check` mounted to read the LSM list.
    pub(super) fn restore_securityfs(&self) {
        if !self.securityfs && host::is_filesystem(SECURITYFS, SECURITYFS_MAGIC) {
            let _ = umount2(SECURITYFS, MntFlags::empty());
        }
    }
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

/// Removes what an earlier `check` that was killed left: `enforcer-check-<pid>` cgroups of
/// processes that are gone, with their policies.
pub(super) fn remove_stale(root: &Path, maps: &mut bpf::PolicyMaps) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("enforcer-check-"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if maps.policies.get(&meta.ino(), 0).is_ok() {
            let _ = remove_policy(maps, meta.ino());
        }
        let _ = fs::remove_dir(entry.path());
    }
}

/// Undoes everything in `made`; returns notes for the output and problems (what could not be
/// undone, with the command that does it).
pub(super) fn clean_up(
    lock: &bpf::StateLock,
    made: Made,
    installed_before: bool,
) -> (Vec<String>, Vec<String>) {
    let (mut notes, mut problems) = (Vec::new(), Vec::new());
    let Made {
        mut maps,
        cgroup_dir,
        attached,
        mount_dir,
        key_serial,
    } = made;
    if let (Some(maps), Some(id)) = (maps.as_mut(), attached)
        && let Err(err) = remove_policy(maps, id)
    {
        problems.push(format!(
            "cannot detach the test policy: {err:#}; run `enforcer detach --cgroup {id}`"
        ));
    }
    if let Some(dir) = &mount_dir {
        if host::is_mount_point(dir) {
            let _ = umount2(dir.as_path(), MntFlags::MNT_DETACH);
        }
        if let Err(err) = fs::remove_dir(dir) {
            problems.push(format!(
                "cannot remove {}: {err}; run `umount {0}; rmdir {0}`",
                dir.display()
            ));
        }
    }
    if let Some(serial) = key_serial {
        // SAFETY: plain integer arguments.
        unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_INVALIDATE, serial as libc::c_long) };
    }
    if let Some(dir) = &cgroup_dir
        && let Err(err) = remove_cgroup(dir)
    {
        problems.push(format!(
            "cannot remove the throwaway cgroup {}: {err}; run `rmdir {0}`",
            dir.display()
        ));
    }
    if installed_before {
        notes.push("the programs were installed before and stay".to_owned());
    } else if let Some(maps) = maps.take() {
        // This check installed the programs: remove them again unless a policy uses them now.
        match maps.policies() {
            Ok(policies) if policies.is_empty() => {
                drop(maps);
                match bpf::reset(lock) {
                    Ok(_) => notes.push(
                        "removed the programs again (check had installed them, and no policy uses them)"
                            .to_owned(),
                    ),
                    Err(err) => problems.push(format!(
                        "cannot remove the programs check installed: {err}; run `enforcer reset`"
                    )),
                }
            }
            Ok(policies) => notes.push(format!(
                "left the programs installed: {} policies use them",
                policies.len()
            )),
            Err(err) => problems.push(format!("cannot read the policies: {err}")),
        }
    }
    (notes, problems)
}

/// Removes a cgroup whose only process just exited; the kernel may need a moment to let go.
fn remove_cgroup(dir: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(err),
        }
    }
}

/// What the self-test made, so that everything is removed again whatever happened.
#[derive(Default)]
pub(super) struct Made {
    pub maps: Option<bpf::PolicyMaps>,
    pub cgroup_dir: Option<PathBuf>,
    /// Cgroup id whose policy the self-test set.
    pub attached: Option<u64>,
    pub mount_dir: Option<PathBuf>,
    /// A key that got added although it should not have been.
    pub key_serial: Option<i64>,
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
