//! `enforcer check`: can this machine enforce?
//!
//! Preflight checks of what the programs need (privileges, kernel version, BTF, BPF LSM in the
//! active LSM list, cgroup v2, bpffs), then a live self-test: a deny-all policy on a throwaway
//! cgroup, a child process that tries each operation from inside it, and the kernel's per-cgroup
//! counters, which must show exactly one denial per operation. The self-test goes through the
//! same code as `attach` and `detach`, and removes everything it made, whatever happened.
//!
//! The self-test does not read events: the ring buffer has a single consumer, and `check` must
//! not take a running `enforcer tail`'s events. The counters are exact and independent of events.
use std::{
    env,
    ffi::CString,
    fs, io,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    process::{self, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use enforcer_common::{Action, Counters, Operation, syscalls};
use nix::errno::Errno;
use serde_json::{Value, json};

use crate::{
    bpf, cgroup, cmd,
    error::ExitError,
    paths::{BPF_FS, BPF_FS_MAGIC, KERNEL_BTF},
    policy,
};

mod leftovers;

#[derive(clap::Args)]
pub struct Args {
    /// One JSON document: `{"ok": bool, "checks": [{"name", "status", "detail", "fix"}]}`.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of the hidden `check-child` subcommand: the self-test's process.
#[derive(clap::Args)]
pub struct ChildArgs {
    /// The throwaway cgroup to join.
    #[arg(long)]
    cgroup: PathBuf,
    /// An empty directory to try mounting a tmpfs on.
    #[arg(long)]
    mount_dir: PathBuf,
    /// Description of the `user` key to try adding.
    #[arg(long)]
    key: String,
}

const SELF_TEST: &str = "self-test";
const CGROUP_UNIFIED: &str = "/sys/fs/cgroup";
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
/// `bpf_task_pt_regs`, which the `capable` program uses, came in 5.15.
const MIN_KERNEL: (u32, u32) = (5, 15);
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
const KEYCTL_INVALIDATE: libc::c_long = 21;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// The outcome of one check: what was found and, when something is wrong, the fix.
#[derive(Debug)]
struct Check {
    name: &'static str,
    status: Status,
    detail: String,
    fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// One line: status, name, what was found, then the fix unless the finding already ends
    /// with it (the loader's messages name their fix at the end).
    fn line(&self) -> String {
        let mut line = format!(
            "{:<4}  {:<10}  {}",
            self.status.name(),
            self.name,
            self.detail
        );
        if let Some(fix) = &self.fix
            && !self.detail.ends_with(fix.as_str())
        {
            line += &format!("; fix: {fix}");
        }
        line
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "status": self.status.name(),
            "detail": self.detail,
            "fix": self.fix,
        })
    }
}

pub fn run(args: Args, bpf: bpf::Bpf) -> Result<()> {
    // The self-test sets a policy and may install the programs: a Ctrl-C, SIGTERM or SIGHUP waits
    // until everything it made is removed again.
    let held = cmd::signals::Held::new().context("cannot hold back termination signals")?;
    // What the checks below mount on their way is unmounted again at the end.
    let mounted = leftovers::Mounted::now();
    let mut checks: Vec<Check> = Vec::new();
    let mut report = |check: Check| {
        if !args.json {
            println!("{}", check.line());
        }
        checks.push(check);
    };

    let euid = nix::unistd::geteuid().as_raw();
    let privileges = privileges(
        euid,
        fs::read_to_string("/proc/self/status").ok().as_deref(),
    );
    let privileged = privileges.status != Status::Fail;
    report(privileges);
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").map(|r| r.trim().to_owned());
    report(kernel(&release));
    report(btf());
    let built_with_bpf_lsm = release.as_ref().ok().and_then(|release| {
        fs::read_to_string(format!("/boot/config-{release}"))
            .ok()
            .map(|config| config.lines().any(|line| line == "CONFIG_BPF_LSM=y"))
    });
    report(lsm(bpf::active_lsms(), built_with_bpf_lsm));
    report(match fs::read_to_string("/proc/self/mountinfo") {
        Ok(mountinfo) => cgroups(&mountinfo),
        Err(err) => Check::fail(
            "cgroup",
            format!("cannot read /proc/self/mountinfo: {err}"),
            "mount proc on /proc",
        ),
    });
    report(bpffs());
    report(match (privileged, cgroup::root()) {
        (false, _) => Check::fail(
            SELF_TEST,
            "not run: it needs root with CAP_SYS_ADMIN (or CAP_BPF and CAP_PERFMON)",
            "fix the privileges line first",
        ),
        (true, Err(err)) => Check::fail(SELF_TEST, "not run: no cgroup v2 mount", err.to_string()),
        (true, Ok(root)) => self_test(bpf, &root, &mounted),
    });

    let lsm_works = checks.iter().all(|check| check.status != Status::Fail);
    let bpf_active = checks
        .iter()
        .any(|check| check.name == LSM && check.status == Status::Ok);
    let tamper = tamper(lsm_works);
    if !args.json {
        println!("{}", tamper.line());
    }
    checks.push(tamper);
    let mode = mode(bpf, lsm_works, privileged, bpf_active);
    if !args.json {
        println!("{}", mode.line());
    }
    checks.push(mode);
    mounted.restore_securityfs();
    if let Some(signal) = held.pending() {
        anyhow::bail!(ExitError::interrupted(
            signal,
            format!("interrupted by {signal}: everything the self-test made is removed again")
        ));
    }

    let failed: Vec<&str> = checks
        .iter()
        .filter(|check| check.status == Status::Fail && check.name != MODE)
        .map(|check| check.name)
        .collect();
    if args.json {
        let checks: Vec<Value> = checks.iter().map(Check::json).collect();
        println!("{}", json!({ "ok": failed.is_empty(), "checks": checks }));
    } else if failed.is_empty() {
        println!("this machine can enforce");
    }
    if failed.is_empty() {
        return Ok(());
    }
    let message = format!(
        "this machine cannot enforce ({} failed); each failed check names its fix",
        failed.join(", ")
    );
    Err(if privileged {
        ExitError::cannot_enforce(message)
    } else {
        ExitError::not_privileged(message)
    }
    .into())
}

const MODE: &str = "mode";

/// What tamper protection holds here, and who it does not hold against.
fn tamper(lsm_works: bool) -> Check {
    const NAME: &str = "tamper";
    if lsm_works {
        Check::ok(
            NAME,
            "no process in a covered cgroup can get a descriptor for, detach or unpin the enforcer's maps, programs and links, load a BPF LSM or fmod_ret program, or trace a runtime's setup process (refused, reported as tamper events); root outside every policy is trusted and can change them",
        )
    } else {
        Check::warn(
            NAME,
            "tamper protection needs BPF LSM: in syscall-layer mode a covered process with CAP_BPF or CAP_SYS_ADMIN can reach the enforcer's maps",
            "boot a kernel with BPF LSM (see the lsm line)",
        )
    }
}

/// Which mode this host gets (#6): the BPF LSM layer when every check above passed, else the
/// syscall layer alone when its programs load and attach here, else none.
fn mode(bpf: bpf::Bpf, lsm_works: bool, privileged: bool, bpf_active: bool) -> Check {
    if lsm_works {
        return Check::ok(
            MODE,
            "lsm: deny, audit and kill at the LSM hooks (--layer lsm); the syscall layer is available too (--layer both|syscall)",
        );
    }
    if !privileged {
        return Check::fail(
            MODE,
            "not probed: it needs root",
            "fix the privileges line first",
        );
    }
    match bpf.probe_syscall_layer() {
        Ok(()) => Check::warn(
            MODE,
            "syscall layer only: BPF LSM is unavailable here, but the sys_enter/sys_exit programs load and attach: `enforcer attach --layer syscall --audit OPS|--kill OPS` works (no deny: a tracepoint cannot change a call's result)",
            if bpf_active {
                // The lsm line is fine: the self-test line names what refuses the programs.
                "for deny, remove what refuses BPF LSM programs here (see the self-test line)"
            } else {
                "for deny, boot a kernel with BPF LSM (see the lsm line)"
            },
        ),
        Err(err) => Check::fail(
            MODE,
            format!(
                "none: BPF LSM is unavailable and the syscall layer cannot load either ({err})"
            ),
            "boot a kernel with BPF LSM or raw tracepoint support",
        ),
    }
}

/// Root, with CAP_SYS_ADMIN or with CAP_BPF and CAP_PERFMON in the effective set.
fn privileges(euid: u32, status: Option<&str>) -> Check {
    const NAME: &str = "privileges";
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

fn kernel(release: &io::Result<String>) -> Check {
    const NAME: &str = "kernel";
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
    match kernel_version(release) {
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

/// (major, minor) of a kernel release such as `6.12.117+deb12-cloud-amd64`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some((major, minor))
}

fn btf() -> Check {
    match fs::metadata(KERNEL_BTF) {
        Ok(meta) => Check::ok(
            "btf",
            format!(
                "{KERNEL_BTF} ({:.1} MiB)",
                meta.len() as f64 / (1 << 20) as f64
            ),
        ),
        Err(err) => Check::fail(
            "btf",
            format!("no kernel BTF at {KERNEL_BTF} ({err})"),
            "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        ),
    }
}

/// `bpf` in the active LSM list (split on commas: `bpf` must be a whole entry).
/// `built_with_bpf_lsm` is what the kernel's config file says, when there is one.
const LSM: &str = "lsm";

fn lsm(active: io::Result<String>, built_with_bpf_lsm: Option<bool>) -> Check {
    const NAME: &str = LSM;
    match active {
        Ok(list) if list.split(',').any(|lsm| lsm == "bpf") => {
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

/// (fstype, mount point) of one `/proc/self/mountinfo` line.
fn mount_entry(line: &str) -> Option<(&str, &str)> {
    let (left, right) = line.split_once(" - ")?;
    Some((right.split(' ').next()?, left.split(' ').nth(4)?))
}

/// Unified (cgroup2 at /sys/fs/cgroup), hybrid (cgroup2 elsewhere next to v1 hierarchies), or
/// no cgroup2 at all.
fn cgroups(mountinfo: &str) -> Check {
    const NAME: &str = "cgroup";
    let mounts: Vec<(&str, &str)> = mountinfo.lines().filter_map(mount_entry).collect();
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

fn bpffs() -> Check {
    const NAME: &str = "bpffs";
    let mounted =
        nix::sys::statfs::statfs(BPF_FS).is_ok_and(|fs| fs.filesystem_type().0 == BPF_FS_MAGIC);
    if mounted {
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

/// Why the self-test could not confirm enforcement.
struct Failure {
    detail: String,
    fix: String,
}

impl Failure {
    fn new(detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            fix: fix.into(),
        }
    }

    /// A loader error in its own words (the same line `attach` prints). A refused BPF LSM load
    /// carries its fix; for the other errors, whose messages end with theirs, it is the part
    /// after the last `; `.
    fn loader(err: &bpf::LoaderError) -> Self {
        let detail = err.with_causes();
        let fix = match err {
            bpf::LoaderError::LsmRefused(_, refusal) => refusal.fix(),
            _ => match detail.rsplit_once("; ") {
                Some((_, fix)) => fix.to_owned(),
                None => "see the message".to_owned(),
            },
        };
        Self { detail, fix }
    }
}

/// What the self-test made, so that everything is removed again whatever happened.
#[derive(Default)]
struct Made {
    maps: Option<bpf::PolicyMaps>,
    cgroup_dir: Option<PathBuf>,
    /// Cgroup id whose policy the self-test set.
    attached: Option<u64>,
    mount_dir: Option<PathBuf>,
    /// A key that got added although it should not have been.
    key_serial: Option<i64>,
}

/// One guarded operation the child tries, and how the kernel refuses it under `deny`.
struct Attempt {
    op: Operation,
    call: &'static str,
    /// The keys code reports a refused keyring lookup as ENOKEY (and a refused creation of the
    /// user keyring, when root has none yet, as EPERM).
    refused_with: &'static [i32],
}

const ATTEMPTS: [Attempt; 3] = [
    Attempt {
        op: Operation::Settime,
        call: "settimeofday",
        refused_with: &[libc::EPERM],
    },
    Attempt {
        op: Operation::Mount,
        call: "mount",
        refused_with: &[libc::EPERM],
    },
    Attempt {
        op: Operation::Keyctl,
        call: "add_key",
        refused_with: &[libc::ENOKEY, libc::EPERM],
    },
];

fn self_test(bpf: bpf::Bpf, root: &Path, mounted: &leftovers::Mounted) -> Check {
    let lock = match bpf.lock() {
        Ok(lock) => lock,
        Err(err) => {
            let failure = Failure::loader(&err);
            return Check::fail(SELF_TEST, failure.detail, failure.fix);
        }
    };
    let installed_before = bpf.programs_pinned();
    let mut made = Made::default();
    let result = confirm_enforcement(&lock, root, &mut made);
    let (notes, problems) = clean_up(&lock, made, installed_before);
    mounted.restore_bpffs(&lock);
    let mut tail = String::new();
    for part in problems.iter().chain(&notes) {
        tail += "; ";
        tail += part;
    }
    match result {
        Ok(found) if problems.is_empty() => Check::ok(SELF_TEST, found + &tail),
        Ok(found) => Check::fail(
            SELF_TEST,
            found + &tail,
            "remove what the lines above name, then run `enforcer check` again",
        ),
        Err(failure) => Check::fail(SELF_TEST, failure.detail + &tail, failure.fix),
    }
}

/// Installs the programs if needed, sets a deny-all policy on a throwaway cgroup, lets a child
/// try every operation from inside it and reads the counters. Records what it made in `made`.
fn confirm_enforcement(
    lock: &bpf::StateLock,
    root: &Path,
    made: &mut Made,
) -> Result<String, Failure> {
    let maps = made
        .maps
        .insert(bpf::install_programs(lock).map_err(|err| Failure::loader(&err))?);
    remove_stale(root, maps);

    let pid = process::id();
    let dir = root.join(format!("enforcer-check-{pid}"));
    fs::create_dir(&dir).map_err(|err| {
        Failure::new(
            format!(
                "cannot create the throwaway cgroup {}: {err}",
                dir.display()
            ),
            format!("make sure {} is writable by root", root.display()),
        )
    })?;
    made.cgroup_dir = Some(dir.clone());
    let target = cgroup::resolve(&dir.to_string_lossy())
        .map_err(|err| Failure::new(err.to_string(), "see the message"))?;
    let deny_all = policy::compile(&[(Action::Deny, Some("all"))], target.level)
        .map_err(|err| Failure::new(err.to_string(), "rebuild enforcer"))?;
    cmd::attach::set_policy(maps, &target, deny_all).map_err(|err| {
        Failure::new(
            format!("cannot attach the test policy: {err:#}"),
            "see the message",
        )
    })?;
    made.attached = Some(target.id);
    let before = counters(maps, target.id);

    let mount_dir = env::temp_dir().join(format!("enforcer-check-{pid}"));
    let _ = fs::remove_dir(&mount_dir);
    fs::create_dir(&mount_dir).map_err(|err| {
        Failure::new(
            format!("cannot create {}: {err}", mount_dir.display()),
            "make the temporary directory writable",
        )
    })?;
    made.mount_dir = Some(mount_dir.clone());

    let report = run_child(&dir, &mount_dir, &format!("enforcer-check-{pid}"))?;
    made.key_serial = report["add_key"]["ret"].as_i64().filter(|ret| *ret > 0);
    let after = counters(maps, target.id);
    judge(&report, &before, &after, &target.path)
}

/// Checks each attempt's errno and that the counters moved by exactly one denial each.
fn judge(
    report: &Value,
    before: &Counters,
    after: &Counters,
    path: &str,
) -> Result<String, Failure> {
    let mut refused = Vec::new();
    let mut problems = Vec::new();
    for attempt in &ATTEMPTS {
        let ret = report[attempt.call]["ret"].as_i64().unwrap_or(0);
        let errno = report[attempt.call]["errno"].as_i64().unwrap_or(0) as i32;
        let delta = |action| after.get(action, attempt.op) - before.get(action, attempt.op);
        let (audited, denied, killed) = (
            delta(Action::Audit),
            delta(Action::Deny),
            delta(Action::Kill),
        );
        let name = attempt.op.name();
        if ret >= 0 {
            problems.push(format!(
                "{} was permitted ({name} not enforced)",
                attempt.call
            ));
        } else if !attempt.refused_with.contains(&errno) {
            problems.push(format!(
                "{} failed with {:?}, not {}",
                attempt.call,
                Errno::from_raw(errno),
                errno_names(attempt.refused_with)
            ));
        }
        if (audited, denied, killed) != (0, 1, 0) {
            let mut problem = format!(
                "{name} counters moved by {denied} denials, {audited} audits, {killed} kills (expected exactly one denial)"
            );
            if ret < 0 && denied == 0 {
                problem += &format!(
                    ": {} was refused before enforcer's program decided (a missing capability?)",
                    attempt.call
                );
            }
            problems.push(problem);
        }
        if ret < 0 {
            refused.push(format!("{} {:?}", attempt.call, Errno::from_raw(errno)));
        }
    }
    if !problems.is_empty() {
        return Err(Failure::new(
            format!("enforcement not confirmed: {}", problems.join("; ")),
            "run `enforcer check` again; if it fails the same way, this kernel's hooks differ from the tested 6.1 and 6.12",
        ));
    }
    Ok(format!(
        "deny-all policy on {path}: {} from inside it, each counted exactly once (the event stream is not read here: the ring buffer has a single consumer, so `enforcer tail` checks events)",
        refused.join(", ")
    ))
}

fn errno_names(list: &[i32]) -> String {
    list.iter()
        .map(|errno| format!("{:?}", Errno::from_raw(*errno)))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Totals over every CPU of one cgroup's counters (zero when it has none).
fn counters(maps: &bpf::PolicyMaps, id: u64) -> Counters {
    let mut totals = Counters::default();
    if let Ok(per_cpu) = maps.counters.get(&id, 0) {
        for cpu in per_cpu.iter() {
            totals.add(cpu);
        }
    }
    totals
}

/// Starts `enforcer check-child` (this same binary) and returns its report.
fn run_child(cgroup_dir: &Path, mount_dir: &Path, key: &str) -> Result<Value, Failure> {
    let mut child = Command::new("/proc/self/exe")
        .arg("check-child")
        .arg("--cgroup")
        .arg(cgroup_dir)
        .arg("--mount-dir")
        .arg(mount_dir)
        .args(["--key", key])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| {
            Failure::new(
                format!("cannot start the test process: {err}"),
                "see the message",
            )
        })?;
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                // Our own child, by handle.
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::new(
                    format!(
                        "the test process did not finish within {} s",
                        CHILD_TIMEOUT.as_secs()
                    ),
                    "run `enforcer check` again",
                ));
            }
        }
    }
    let output = child.wait_with_output().map_err(|err| {
        Failure::new(
            format!("cannot read the test process: {err}"),
            "see the message",
        )
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Failure::new(
            format!(
                "the test process failed ({}): {}",
                output.status,
                stderr.trim().replace('\n', " ")
            ),
            "see the message",
        ));
    }
    serde_json::from_str(stdout.trim()).map_err(|err| {
        Failure::new(
            format!("the test process printed {stdout:?}: {err}"),
            "rebuild enforcer",
        )
    })
}

/// Removes what an earlier `check` that was killed left: `enforcer-check-<pid>` cgroups of
/// processes that are gone, with their policies.
fn remove_stale(root: &Path, maps: &mut bpf::PolicyMaps) {
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
            let _ = cmd::detach::remove_policy(maps, meta.ino());
        }
        let _ = fs::remove_dir(entry.path());
    }
}

/// Undoes everything in `made`; returns notes for the output and problems (what could not be
/// undone, with the command that does it).
fn clean_up(
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
        && let Err(err) = cmd::detach::remove_policy(maps, id)
    {
        problems.push(format!(
            "cannot detach the test policy: {err:#}; run `enforcer detach --cgroup {id}`"
        ));
    }
    if let Some(dir) = &mount_dir {
        if is_mount_point(dir) {
            let _ = nix::mount::umount2(dir.as_path(), nix::mount::MntFlags::MNT_DETACH);
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

fn is_mount_point(dir: &Path) -> bool {
    let target = dir.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|mountinfo| {
        mountinfo
            .lines()
            .any(|line| line.split(' ').nth(4) == Some(target.as_ref()))
    })
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

/// The self-test's process: joins the throwaway cgroup, tries each operation once and prints
/// `{"settimeofday": {"ret", "errno"}, "mount": {...}, "add_key": {...}}`. It never judges.
pub fn child(args: ChildArgs) -> Result<()> {
    fs::write(args.cgroup.join("cgroup.procs"), process::id().to_string())
        .with_context(|| format!("cannot join {}", args.cgroup.display()))?;
    // Events name the command: `enforcer-check`, not `exe` (the name of /proc/self/exe).
    // SAFETY: a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"enforcer-check".as_ptr()) };

    // SAFETY: settimeofday(NULL, NULL) reads nothing and changes nothing; it still passes the
    // CAP_SYS_TIME check, which the `capable` program guards.
    let settime = outcome(unsafe {
        libc::syscall(
            libc::SYS_settimeofday,
            std::ptr::null::<libc::c_void>(),
            std::ptr::null::<libc::c_void>(),
        )
    });

    let target = CString::new(args.mount_dir.as_os_str().as_bytes())?;
    // SAFETY: NUL-terminated strings; no data.
    let mount = outcome(i64::from(unsafe {
        libc::mount(
            c"none".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    }));
    if mount["ret"] == 0 {
        // Not enforced: take it away again (the parent checks too).
        // SAFETY: NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }

    let description = CString::new(args.key)?;
    let payload = b"enforcer";
    // SAFETY: NUL-terminated strings, payload pointer and length match.
    let add_key = outcome(unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            description.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_USER_KEYRING,
        )
    });

    println!(
        "{}",
        json!({ "settimeofday": settime, "mount": mount, "add_key": add_key })
    );
    Ok(())
}

/// `{"ret", "errno"}` of a call that just returned `ret` (errno read right away).
fn outcome(ret: i64) -> Value {
    let errno = if ret < 0 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    json!({ "ret": ret, "errno": errno })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys rw,nosuid - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";

    #[test]
    fn reads_kernel_versions() {
        assert_eq!(kernel_version("6.12.117+deb12-cloud-amd64"), Some((6, 12)));
        assert_eq!(kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(kernel_version("6.1.0-57-cloud-amd64\n"), Some((6, 1)));
        assert_eq!(kernel_version("garbage"), None);
        assert_eq!(kernel(&Ok("5.10.0-30-amd64".into())).status, Status::Fail);
        assert_eq!(kernel(&Ok("5.15.0".into())).status, Status::Ok);
        assert_eq!(
            kernel(&Ok("6.1.0-57-cloud-amd64".into())).status,
            Status::Ok
        );
        assert_eq!(kernel(&Ok("6.18.44".into())).status, Status::Ok);
        // Newer than the verified system call table: said, not refused.
        let newer = kernel(&Ok("6.19.1".into()));
        assert_eq!(newer.status, Status::Warn);
        assert!(newer.line().contains("verified"), "{}", newer.line());
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

    #[test]
    fn lines_name_the_fix_once() {
        let check = Check::fail("lsm", "bpf is missing", "add lsm=x,bpf");
        assert_eq!(
            check.line(),
            "fail  lsm         bpf is missing; fix: add lsm=x,bpf"
        );
        let unknown = crate::refusal::Refusal::LsmListUnknown;
        let refused = Failure::loader(&bpf::LoaderError::LsmRefused("settime", unknown));
        let check = Check::fail(SELF_TEST, refused.detail.clone(), refused.fix);
        assert_eq!(
            check.line(),
            format!("fail  self-test   {}", refused.detail),
            "the loader's own wording, fix included once"
        );
        assert_eq!(
            check.json()["fix"],
            "boot a kernel with CONFIG_BPF_LSM=y and bpf in lsm="
        );
        // With bpf active, the fix comes from the typed refusal, not from the message's words.
        let active = crate::refusal::Refusal::BpfActive {
            lsms: "capability,bpf".to_owned(),
            lockdown: None,
            seccomp: Some(2),
        };
        let refused = Failure::loader(&bpf::LoaderError::LsmRefused("capable", active.clone()));
        assert_eq!(refused.fix, active.fix());
        assert!(!refused.detail.contains("lsm="), "{}", refused.detail);
    }

    #[test]
    fn judge_wants_one_counted_denial_each() {
        let report = json!({
            "settimeofday": { "ret": -1, "errno": libc::EPERM },
            "mount": { "ret": -1, "errno": libc::EPERM },
            "add_key": { "ret": -1, "errno": libc::ENOKEY },
        });
        let before = Counters::default();
        let mut after = Counters::default();
        for op in [Operation::Settime, Operation::Mount, Operation::Keyctl] {
            after.by_action[Action::Deny as usize][op as usize] = 1;
        }
        let found = judge(&report, &before, &after, "/enforcer-check-1").unwrap_or_else(|f| {
            panic!("{}", f.detail);
        });
        assert!(
            found.contains("settimeofday EPERM, mount EPERM, add_key ENOKEY"),
            "{found}"
        );

        after.by_action[Action::Deny as usize][Operation::Keyctl as usize] = 2;
        let failure = judge(&report, &before, &after, "/x").expect_err("two denials");
        assert!(
            failure
                .detail
                .contains("keyctl counters moved by 2 denials")
        );

        let mut permitted = report.clone();
        permitted["mount"] = json!({ "ret": 0, "errno": 0 });
        let failure = judge(&permitted, &before, &before, "/x").expect_err("permitted");
        assert!(
            failure.detail.contains("mount was permitted"),
            "{}",
            failure.detail
        );
    }
}
