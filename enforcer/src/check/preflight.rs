//! The preflight checks: what the programs need of this machine, read without changing
//! anything but the mounts of securityfs that [`host::active_lsms`] may make (taken back at the
//! end of `check`).
use std::{fs, io, path::Path};

use enforcer_common::syscalls;

use super::{Check, Name};
use crate::{
    host,
    paths::{BPF_FS, BPF_FS_MAGIC},
};

const BTF: &str = "/sys/kernel/btf/vmlinux";
const CGROUP_UNIFIED: &str = "/sys/fs/cgroup";
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
/// `bpf_task_pt_regs`, which the `capable` program uses, came in 5.15.
const MIN_KERNEL: (u32, u32) = (5, 15);

/// Root, with CAP_SYS_ADMIN or with CAP_BPF and CAP_PERFMON in the effective set.
pub(super) fn privileges(euid: u32, status: Option<&str>) -> Check {
    const NAME: Name = Name::Privileges;
    if euid != 0 {
        return Check::fail(
            NAME,
            format!("running as uid {euid}, not root"),
            "run `enforcer check` as root",
        );
    }
    let Some(caps) = status.and_then(cap_eff) else {
        return Check::warn(
            NAME,
            "root, but CapEff is unreadable in /proc/self/status",
            "make sure CAP_SYS_ADMIN (or CAP_BPF and CAP_PERFMON) is in the effective set",
        );
    };
    let has = |cap: u32| caps & (1 << cap) != 0;
    let named = |list: &[u32]| {
        list.iter()
            .map(|cap| cap_name(*cap))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let present: Vec<u32> = [CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON]
        .into_iter()
        .filter(|cap| has(*cap))
        .collect();
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        let list: Vec<&str> = present.iter().map(|cap| cap_name(*cap)).collect();
        return Check::ok(
            NAME,
            format!("root, with {} (CapEff {caps:016x})", list.join(", ")),
        );
    }
    let mut missing = vec![CAP_SYS_ADMIN];
    missing.extend([CAP_BPF, CAP_PERFMON].into_iter().filter(|cap| !has(*cap)));
    Check::fail(
        NAME,
        format!(
            "root, but CapEff {caps:016x} lacks {}: it needs CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON",
            named(&missing)
        ),
        "run it as root with CAP_SYS_ADMIN (a container needs --privileged or --cap-add SYS_ADMIN)",
    )
}

fn cap_name(cap: u32) -> &'static str {
    match cap {
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
        CAP_BPF => "CAP_BPF",
        CAP_PERFMON => "CAP_PERFMON",
        _ => "?",
    }
}

/// The effective capability set from `/proc/<pid>/status`.
fn cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

pub(super) fn kernel(release: &io::Result<String>) -> Check {
    const NAME: Name = Name::Kernel;
    let release = match release {
        Ok(release) => release,
        Err(err) => {
            return Check::warn(
                NAME,
                format!("cannot read /proc/sys/kernel/osrelease: {err}"),
                "make sure the kernel is 5.15 or later",
            );
        }
    };
    let (major, minor) = MIN_KERNEL;
    let (newest_major, newest_minor) = syscalls::VERIFIED_KERNEL;
    match host::kernel_version(release) {
        Some(version) if version > syscalls::VERIFIED_KERNEL => Check::warn(
            NAME,
            format!(
                "{release} is newer than {newest_major}.{newest_minor}, the newest kernel whose system call table this build was verified against: a call it adds is not named, and a mount call it adds is guarded only through its CAP_SYS_ADMIN check (every such check made by a call numbered above {} counts as mount), not at the syscall layer",
                syscalls::NEWEST_VERIFIED
            ),
            "use an enforcer release verified on this kernel",
        ),
        Some(version) if version >= MIN_KERNEL => {
            Check::ok(NAME, format!("{release} ({major}.{minor} or later)"))
        }
        Some(_) => Check::fail(
            NAME,
            format!(
                "{release} is older than {major}.{minor}, which the programs need (bpf_task_pt_regs)"
            ),
            format!("boot a kernel {major}.{minor} or later with CONFIG_BPF_LSM=y"),
        ),
        None => Check::warn(
            NAME,
            format!("cannot tell the version of kernel release {release:?}"),
            format!("make sure the kernel is {major}.{minor} or later"),
        ),
    }
}

pub(super) fn btf() -> Check {
    match fs::metadata(BTF) {
        Ok(meta) => Check::ok(
            Name::Btf,
            format!("{BTF} ({:.1} MiB)", meta.len() as f64 / f64::from(1 << 20)),
        ),
        Err(err) => Check::fail(
            Name::Btf,
            format!("no kernel BTF at {BTF} ({err})"),
            "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        ),
    }
}

/// `bpf` in the active LSM list (a whole entry). `built_with_bpf_lsm` is what the kernel's config
/// file says, when there is one.
pub(super) fn lsm(active: io::Result<String>, built_with_bpf_lsm: Option<bool>) -> Check {
    const NAME: Name = Name::Lsm;
    match active {
        Ok(list) if host::lsm_listed(&list, "bpf") => {
            Check::ok(NAME, format!("bpf is an active LSM ({list})"))
        }
        Ok(list) => {
            let wanted = if list.is_empty() {
                "bpf".to_owned()
            } else {
                format!("{list},bpf")
            };
            let mut fix = format!("add lsm={wanted} to the kernel command line");
            if built_with_bpf_lsm == Some(false) {
                fix = format!("boot a kernel built with CONFIG_BPF_LSM=y, and {fix}");
            }
            Check::fail(
                NAME,
                format!("bpf is not in the active LSM list ({list})"),
                fix,
            )
        }
        Err(err) => Check::warn(
            NAME,
            format!(
                "cannot read the active LSM list /sys/kernel/security/lsm ({err}); the self-test decides"
            ),
            "mount -t securityfs securityfs /sys/kernel/security",
        ),
    }
}

/// Unified (cgroup2 at /sys/fs/cgroup), hybrid (cgroup2 elsewhere next to v1 hierarchies), or
/// no cgroup2 at all.
pub(super) fn cgroups(mountinfo: &str) -> Check {
    const NAME: Name = Name::Cgroup;
    let mounts: Vec<(&str, &str)> = host::mounts(mountinfo)
        .map(|mount| (mount.fstype, mount.point))
        .collect();
    // The first cgroup2 mount, as `cgroup::root` takes it.
    let v2 = mounts
        .iter()
        .find(|(fstype, _)| *fstype == "cgroup2")
        .map(|(_, point)| *point);
    let v1: Vec<&str> = mounts
        .iter()
        .filter(|(fstype, _)| *fstype == "cgroup")
        .map(|(_, point)| *point)
        .collect();
    let v1_list = || {
        let parent = Path::new(v1[0]).parent().unwrap_or(Path::new("/"));
        let names: Vec<String> = v1
            .iter()
            .map(|point| {
                Path::new(point)
                    .strip_prefix(parent)
                    .map_or_else(|_| (*point).to_owned(), |p| p.display().to_string())
            })
            .collect();
        format!("under {} ({})", parent.display(), names.join(","))
    };
    match v2 {
        Some(CGROUP_UNIFIED) => Check::ok(NAME, format!("unified: cgroup v2 at {CGROUP_UNIFIED}")),
        Some(point) if !v1.is_empty() => Check::warn(
            NAME,
            format!(
                "hybrid: cgroup v2 at {point}, v1 hierarchies {}; policies go on the v2 hierarchy, and processes that sit only in v1 hierarchies are in the v2 root, so a container's cgroup id may be the v2 root's",
                v1_list()
            ),
            "boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2 only), or check that each container has its own v2 cgroup (the 0:: line of /proc/<pid>/cgroup)",
        ),
        Some(point) => Check::ok(NAME, format!("cgroup v2 at {point}")),
        None => Check::fail(
            NAME,
            if v1.is_empty() {
                "no cgroup filesystem is mounted".to_owned()
            } else {
                format!("only cgroup v1 is mounted ({})", v1_list())
            },
            "mount -t cgroup2 none /sys/fs/cgroup, or boot with systemd.unified_cgroup_hierarchy=1",
        ),
    }
}

pub(super) fn bpffs() -> Check {
    const NAME: Name = Name::Bpffs;
    if host::is_filesystem(BPF_FS, BPF_FS_MAGIC) {
        return Check::ok(NAME, format!("mounted at {BPF_FS}"));
    }
    let supported = fs::read_to_string("/proc/filesystems").is_ok_and(|list| {
        list.lines()
            .any(|line| line.split_whitespace().last() == Some("bpf"))
    });
    match (supported, Path::new(BPF_FS).is_dir()) {
        (true, true) => Check::ok(
            NAME,
            format!(
                "not mounted at {BPF_FS}, but mountable: the kernel has the bpf filesystem, and attach mounts it there"
            ),
        ),
        (true, false) => Check::fail(
            NAME,
            format!("{BPF_FS} does not exist"),
            "mount sysfs on /sys (mount -t sysfs sysfs /sys)",
        ),
        (false, _) => Check::fail(
            NAME,
            "the kernel has no bpf filesystem (bpf is not in /proc/filesystems)",
            "boot a kernel built with CONFIG_BPF_SYSCALL=y",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    const HYBRID: &str = "\
25 1 0:23 / /sys rw,nosuid - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";

    #[test]
    fn kernels_from_5_15_pass() {
        assert_eq!(kernel(&Ok("5.10.0-30-amd64".into())).status, Status::Fail);
        assert_eq!(kernel(&Ok("5.15.0".into())).status, Status::Ok);
        assert_eq!(
            kernel(&Ok("6.1.0-57-cloud-amd64".into())).status,
            Status::Ok
        );
        assert_eq!(kernel(&Ok("6.18.44".into())).status, Status::Ok);
        assert_eq!(kernel(&Ok("garbage".into())).status, Status::Warn);
        // Newer than the verified system call table: said, not refused.
        let newer = kernel(&Ok("6.19.1".into()));
        assert_eq!(newer.status, Status::Warn);
        assert!(newer.detail.contains("verified"), "{newer:?}");
    }

    #[test]
    fn privileges_need_root_and_capabilities() {
        let status = |caps: u64| format!("Name:\tenforcer\nCapEff:\t{caps:016x}\n");
        assert_eq!(privileges(1000, Some(&status(0))).status, Status::Fail);
        let admin = privileges(0, Some(&status(1 << CAP_SYS_ADMIN)));
        assert_eq!(admin.status, Status::Ok, "{admin:?}");
        let split = privileges(0, Some(&status((1 << CAP_BPF) | (1 << CAP_PERFMON))));
        assert_eq!(split.status, Status::Ok, "{split:?}");
        let partial = privileges(0, Some(&status(1 << CAP_BPF)));
        assert_eq!(partial.status, Status::Fail);
        assert!(
            partial
                .detail
                .contains("lacks CAP_SYS_ADMIN and CAP_PERFMON"),
            "{partial:?}"
        );
        assert_eq!(
            cap_eff("CapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
    }

    #[test]
    fn lsm_list_is_split_on_commas() {
        let active = lsm(Ok("lockdown,capability,landlock,bpf".into()), None);
        assert_eq!(active.status, Status::Ok);
        // No substring match: "bpfx" is not bpf.
        let missing = lsm(Ok("lockdown,capability,bpfx".into()), None);
        assert_eq!(missing.status, Status::Fail);
        assert_eq!(
            missing.fix.as_deref(),
            Some("add lsm=lockdown,capability,bpfx,bpf to the kernel command line")
        );
        let unbuilt = lsm(Ok("capability".into()), Some(false));
        assert!(
            unbuilt
                .fix
                .unwrap()
                .starts_with("boot a kernel built with CONFIG_BPF_LSM=y")
        );
    }

    #[test]
    fn cgroup_layouts() {
        let unified = "31 30 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroups(unified).status, Status::Ok);
        let hybrid = cgroups(HYBRID);
        assert_eq!(hybrid.status, Status::Warn);
        assert!(
            hybrid
                .detail
                .contains("v1 hierarchies under /sys/fs/cgroup (cpu,memory)"),
            "{hybrid:?}"
        );
        let v1_only: String = HYBRID
            .lines()
            .filter(|line| !line.contains("cgroup2"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(cgroups(&v1_only).status, Status::Fail);
        assert_eq!(cgroups("").status, Status::Fail);
    }
}
