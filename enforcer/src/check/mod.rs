//! Can this machine enforce? The library behind `enforcer check`.
//!
//! Preflight checks of what the programs need ([`preflight`]: privileges, kernel version, BTF,
//! BPF LSM in the active LSM list, cgroup v2, bpffs), then a live self-test ([`selftest`]): a
//! deny-all policy on a throwaway cgroup, a child process ([`child`]) that tries each operation
//! from inside it, and the kernel's per-cgroup counters, which must show exactly one denial per
//! operation. The self-test goes through the same code as `attach` and `detach`, and removes
//! everything it made, whatever happened ([`leftovers`]).
//!
//! The self-test does not read events: the ring buffer has a single consumer, and `check` must
//! not take a running `enforcer tail`'s events. The counters are exact and independent of events.
//!
//! This module finds and judges; the command renders its [`Check`]s as lines or JSON.
mod attempts;
pub mod child;
mod leftovers;
mod preflight;
mod selftest;

// The policy store, borrowed from the two commands that write it until it has a room of its own.
use crate::store::{remove_policy, set_policy};
use crate::{bpf, cgroup, host};

/// What each check is about, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    Privileges,
    Kernel,
    Btf,
    Lsm,
    Cgroup,
    Bpffs,
    SelfTest,
    Tamper,
    Mode,
}

impl Name {
    /// The name printed in the second column and in the JSON `name` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileges => "privileges",
            Self::Kernel => "kernel",
            Self::Btf => "btf",
            Self::Lsm => "lsm",
            Self::Cgroup => "cgroup",
            Self::Bpffs => "bpffs",
            Self::SelfTest => "self-test",
            Self::Tamper => "tamper",
            Self::Mode => "mode",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// The outcome of one check: what was found and, when something is wrong, the fix.
#[derive(Debug)]
pub struct Check {
    pub name: Name,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: Name, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(name: Name, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(name: Name, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Every check, in the order they ran.
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// The checks that failed, by name. The mode line is a summary of the others, not a check of
    /// its own.
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|check| check.status == Status::Fail && check.name != Name::Mode)
            .map(|check| check.name.as_str())
            .collect()
    }

    /// Whether the privileges check passed: the exit code says which of the two failures it is.
    pub fn privileged(&self) -> bool {
        self.checks
            .iter()
            .any(|check| check.name == Name::Privileges && check.status != Status::Fail)
    }
}

/// Runs every check, handing each to `show` as soon as it is made (the self-test takes seconds),
/// and leaves the machine as it found it. The caller holds back termination signals: the
/// self-test sets a policy and may install the programs.
pub fn run(bpf: bpf::Bpf, mut show: impl FnMut(&Check)) -> Report {
    // What the checks below mount on their way is unmounted again at the end.
    let mounted = leftovers::Mounted::now();
    let mut checks: Vec<Check> = Vec::new();
    let mut report = |check: Check| {
        show(&check);
        checks.push(check);
    };

    let privileges = preflight::privileges(
        nix::unistd::geteuid().as_raw(),
        std::fs::read_to_string("/proc/self/status").ok().as_deref(),
    );
    let privileged = privileges.status != Status::Fail;
    report(privileges);
    let release = host::kernel_release();
    report(preflight::kernel(&release));
    report(preflight::btf());
    let built_with_bpf_lsm = release
        .as_ref()
        .ok()
        .and_then(|release| host::kernel_built_with(release, "CONFIG_BPF_LSM"));
    report(preflight::lsm(host::active_lsms(), built_with_bpf_lsm));
    report(match host::mountinfo() {
        Ok(mountinfo) => preflight::cgroups(&mountinfo),
        Err(err) => Check::fail(
            Name::Cgroup,
            format!("cannot read /proc/self/mountinfo: {err}"),
            "mount proc on /proc",
        ),
    });
    report(preflight::bpffs());
    report(match (privileged, cgroup::root()) {
        (false, _) => Check::fail(
            Name::SelfTest,
            "not run: it needs root with CAP_SYS_ADMIN (or CAP_BPF and CAP_PERFMON)",
            "fix the privileges line first",
        ),
        (true, Err(err)) => Check::fail(
            Name::SelfTest,
            "not run: no cgroup v2 mount",
            err.to_string(),
        ),
        (true, Ok(root)) => selftest::run(bpf, &root, &mounted),
    });

    let lsm_works = checks.iter().all(|check| check.status != Status::Fail);
    let bpf_active = checks
        .iter()
        .any(|check| check.name == Name::Lsm && check.status == Status::Ok);
    let tamper = tamper(lsm_works);
    show(&tamper);
    checks.push(tamper);
    let mode = mode(bpf, lsm_works, privileged, bpf_active);
    show(&mode);
    checks.push(mode);
    mounted.restore_securityfs();
    Report { checks }
}

/// What tamper protection holds here, and who it does not hold against.
fn tamper(lsm_works: bool) -> Check {
    if lsm_works {
        Check::ok(
            Name::Tamper,
            "no process in a covered cgroup can get a descriptor for, detach or unpin the enforcer's maps, programs and links, load a BPF LSM or fmod_ret program, or trace a runtime's setup process (refused, reported as tamper events); root outside every policy is trusted and can change them",
        )
    } else {
        Check::warn(
            Name::Tamper,
            "tamper protection needs BPF LSM: in syscall-layer mode a covered process with CAP_BPF or CAP_SYS_ADMIN can reach the enforcer's maps",
            "boot a kernel with BPF LSM (see the lsm line)",
        )
    }
}

/// Which mode this host gets: the BPF LSM layer when every check above passed, else the syscall
/// layer alone when its programs load and attach here, else none.
fn mode(bpf: bpf::Bpf, lsm_works: bool, privileged: bool, bpf_active: bool) -> Check {
    if lsm_works {
        return Check::ok(
            Name::Mode,
            "lsm: deny, audit and kill at the LSM hooks (--layer lsm); the syscall layer is available too (--layer both|syscall)",
        );
    }
    if !privileged {
        return Check::fail(
            Name::Mode,
            "not probed: it needs root",
            "fix the privileges line first",
        );
    }
    match bpf.probe_syscall_layer() {
        Ok(()) => Check::warn(
            Name::Mode,
            "syscall layer only: BPF LSM is unavailable here, but the sys_enter/sys_exit programs load and attach: `enforcer attach --layer syscall --audit OPS|--kill OPS` works (no deny: a tracepoint cannot change a call's result)",
            if bpf_active {
                // The lsm line is fine: the self-test line names what refuses the programs.
                "for deny, remove what refuses BPF LSM programs here (see the self-test line)"
            } else {
                "for deny, boot a kernel with BPF LSM (see the lsm line)"
            },
        ),
        Err(err) => Check::fail(
            Name::Mode,
            format!(
                "none: BPF LSM is unavailable and the syscall layer cannot load either ({err})"
            ),
            "boot a kernel with BPF LSM or raw tracepoint support",
        ),
    }
}
