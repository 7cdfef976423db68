//! Facts about this host that more than one command reads: what is mounted where
//! (`/proc/self/mountinfo`, filesystem magic numbers), the active LSMs and the kernel release.
//! Read in one place, so that every command parses them the same way.
use std::{fs, io, path::Path};

use crate::paths::SECURITYFS;

/// `statfs` magic of securityfs.
pub const SECURITYFS_MAGIC: i64 = 0x7363_6673;
const MOUNTINFO: &str = "/proc/self/mountinfo";
const OSRELEASE: &str = "/proc/sys/kernel/osrelease";

/// One line of `/proc/self/mountinfo`, the two fields the commands use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mount<'a> {
    pub fstype: &'a str,
    pub point: &'a str,
}

impl<'a> Mount<'a> {
    /// Parses one mountinfo line: the mount point is the fifth field, the filesystem type the
    /// first one after the ` - ` separator (the optional fields before it vary in number).
    pub fn parse(line: &'a str) -> Option<Self> {
        let (left, right) = line.split_once(" - ")?;
        Some(Self {
            fstype: right.split(' ').next()?,
            point: left.split(' ').nth(4)?,
        })
    }
}

/// This process's mount table, as the kernel writes it.
pub fn mountinfo() -> io::Result<String> {
    fs::read_to_string(MOUNTINFO)
}

/// The mounts of a mount table, in its order (the first of a type is the one in use).
pub fn mounts(mountinfo: &str) -> impl Iterator<Item = Mount<'_>> {
    mountinfo.lines().filter_map(Mount::parse)
}

/// True when something is mounted on `dir` in this mount namespace.
pub fn is_mount_point(dir: &Path) -> bool {
    let target = dir.to_string_lossy();
    mountinfo().is_ok_and(|table| mounts(&table).any(|mount| mount.point == target))
}

/// True when the filesystem at `path` has the `statfs` magic number `magic`.
pub fn is_filesystem(path: &str, magic: i64) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 == magic)
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

/// True when `lsm` is a whole entry of the active LSM list (`bpfx` is not `bpf`).
pub fn lsm_listed(active: &str, lsm: &str) -> bool {
    active.split(',').any(|entry| entry == lsm)
}

/// The running kernel's release, such as `6.12.117+deb12-cloud-amd64`.
pub fn kernel_release() -> io::Result<String> {
    fs::read_to_string(OSRELEASE).map(|release| release.trim().to_owned())
}

/// (major, minor) of a kernel release.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether the kernel `release` was built with `option=y`, from its `/boot/config-<release>`;
/// `None` when that file is not there (many images do not ship it).
pub fn kernel_built_with(release: &str, option: &str) -> Option<bool> {
    let config = fs::read_to_string(format!("/boot/config-{release}")).ok()?;
    let wanted = format!("{option}=y");
    Some(config.lines().any(|line| line == wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let line = "31 30 0:27 / /sys/fs/cgroup/unified rw shared:9 - cgroup2 cgroup2 rw";
        assert_eq!(
            Mount::parse(line),
            Some(Mount {
                fstype: "cgroup2",
                point: "/sys/fs/cgroup/unified"
            })
        );
        assert_eq!(Mount::parse("31 30 0:27 / /x rw"), None);
        let table = format!("{line}\n\ngarbage\n25 1 0:23 / /sys rw - sysfs sysfs rw\n");
        let points: Vec<&str> = mounts(&table).map(|mount| mount.point).collect();
        assert_eq!(points, ["/sys/fs/cgroup/unified", "/sys"]);
    }

    #[test]
    fn reads_kernel_versions_and_lsm_lists() {
        assert_eq!(kernel_version("6.12.117+deb12-cloud-amd64"), Some((6, 12)));
        assert_eq!(kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(kernel_version("6.1.0-57-cloud-amd64\n"), Some((6, 1)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(lsm_listed("lockdown,capability,landlock,bpf", "bpf"));
        assert!(!lsm_listed("lockdown,capability,bpfx", "bpf"));
        assert!(!lsm_listed("", "bpf"));
    }
}
