//! The live self-test: a deny-all policy on a throwaway cgroup, a child process that tries every
//! operation from inside it, and the kernel's per-cgroup counters, which must show exactly one
//! denial per operation. A failure is a typed [`Failure`], so its fix is chosen by kind.
use std::{
    env, fs, io,
    path::{Path, PathBuf},
    process::{self, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use enforcer_common::{Action, Counters, Operation};
use nix::errno::Errno;

use super::{
    Check, Name,
    attempts::{CallOutcome, CallReport, attempt, operations},
    leftovers::{self, Made},
    set_policy,
};
use crate::{
    bpf::{self, LoaderError},
    cgroup::{self, CgroupError},
    kernel_layout::LayoutError,
    policy::{self, PolicyError},
};

/// Why the self-test could not confirm enforcement.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    /// With its causes: the check line is the whole story, and the last cause names the fix.
    #[error("{}", .0.with_causes())]
    Loader(#[from] LoaderError),
    #[error("cannot create the throwaway cgroup {}: {cause}", dir.display())]
    CgroupDir {
        dir: PathBuf,
        root: PathBuf,
        cause: io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot attach the test policy: {0:#}")]
    Attach(anyhow::Error),
    #[error("cannot create {}: {cause}", dir.display())]
    MountDir { dir: PathBuf, cause: io::Error },
    #[error("cannot start the test process: {0}")]
    StartChild(io::Error),
    #[error("the test process did not finish within {} s", TIMEOUT.as_secs())]
    ChildTimeout,
    #[error("cannot read the test process: {0}")]
    ReadChild(io::Error),
    /// `stderr` on one line.
    #[error("the test process failed ({status}): {stderr}")]
    ChildFailed { status: ExitStatus, stderr: String },
    #[error("the test process printed {stdout:?}: {cause}")]
    ChildReport {
        stdout: String,
        cause: serde_json::Error,
    },
    #[error("enforcement not confirmed: {}", .0.join("; "))]
    NotConfirmed(Vec<String>),
}

impl Failure {
    pub(super) fn fix(&self) -> String {
        const SEE: &str = "see the message";
        match self {
            Self::Loader(err) => loader_fix(err),
            Self::CgroupDir { root, .. } => {
                format!("make sure {} is writable by root", root.display())
            }
            Self::Cgroup(_)
            | Self::StartChild(_)
            | Self::ReadChild(_)
            | Self::ChildFailed { .. } => SEE.to_owned(),
            Self::Policy(_) | Self::ChildReport { .. } => "rebuild enforcer".to_owned(),
            Self::Attach(err) => err
                .downcast_ref::<LoaderError>()
                .map_or_else(|| SEE.to_owned(), loader_fix),
            Self::MountDir { .. } => "make the temporary directory writable".to_owned(),
            Self::ChildTimeout => "run `enforcer check` again".to_owned(),
            Self::NotConfirmed(_) => "run `enforcer check` again; if it fails the same way, this kernel's hooks differ from the tested 6.1 and 6.12".to_owned(),
        }
    }
}

/// The fix for a loader error. The loader's messages end with theirs, in the same words, so the
/// line names it once; a refused BPF LSM load carries the one that fits what was found.
fn loader_fix(err: &LoaderError) -> String {
    const SEE: &str = "see the message";
    match err {
        LoaderError::NotPrivileged => "run it as root".to_owned(),
        LoaderError::LsmInactive(active) => {
            format!("add bpf to the boot parameter: lsm={active},bpf")
        }
        LoaderError::LsmRefused(_, refusal) => refusal.fix(),
        LoaderError::MissingHook { .. } | LoaderError::Rejected { .. } => SEE.to_owned(),
        LoaderError::NotInstalled(_) => "start with `enforcer attach`".to_owned(),
        LoaderError::NewerAbi { .. } => "run the newer enforcer, or `enforcer reset` to remove every program and policy and start over".to_owned(),
        LoaderError::OlderAbi { .. } => "run `enforcer check`, `enforcer attach` or `enforcer daemon` of this enforcer to migrate them (policies and counters are carried over)".to_owned(),
        LoaderError::UnknownAbi { .. } => {
            "run `enforcer reset` to remove every program and policy and start over".to_owned()
        }
        LoaderError::AbiMismatch { .. } => {
            "run `enforcer reset` (every policy is removed) and attach again".to_owned()
        }
        // The upgrade is finished by running again; what stopped it names its own fix.
        LoaderError::PartlyReplaced { source, .. } => loader_fix(source),
        LoaderError::NoBtf(_) => "a kernel with CONFIG_DEBUG_INFO_BTF=y is needed".to_owned(),
        LoaderError::KernelLayout(LayoutError::Read { .. }) => {
            "enforcer needs a kernel built with CONFIG_DEBUG_INFO_BTF=y".to_owned()
        }
        LoaderError::KernelLayout(LayoutError::MissingField(_)) => {
            "this kernel is not supported".to_owned()
        }
        LoaderError::KernelLayout(LayoutError::Malformed(_)) => SEE.to_owned(),
        LoaderError::BrokenObject(..) => "the build is broken, rebuild enforcer".to_owned(),
        LoaderError::Bpf { .. } | LoaderError::Io { .. } => SEE.to_owned(),
    }
}

/// The self-test's line.
pub(super) fn run(bpf: bpf::Bpf, root: &Path, mounted: &leftovers::Mounted) -> Check {
    let lock = match bpf.lock() {
        Ok(lock) => lock,
        Err(err) => {
            let failure = Failure::from(err);
            return Check::fail(Name::SelfTest, failure.to_string(), failure.fix());
        }
    };
    let installed_before = bpf.programs_pinned();
    let mut made = Made::default();
    let result = confirm_enforcement(&lock, root, &mut made);
    let (notes, problems) = leftovers::clean_up(&lock, made, installed_before);
    mounted.restore_bpffs(&lock);
    let mut tail = String::new();
    for part in problems.iter().chain(&notes) {
        tail += "; ";
        tail += part;
    }
    match result {
        Ok(found) if problems.is_empty() => Check::ok(Name::SelfTest, found + &tail),
        Ok(found) => Check::fail(
            Name::SelfTest,
            found + &tail,
            "remove what the lines above name, then run `enforcer check` again",
        ),
        Err(failure) => Check::fail(Name::SelfTest, failure.to_string() + &tail, failure.fix()),
    }
}

/// Installs the programs if needed, sets a deny-all policy on a throwaway cgroup, lets a child
/// try every operation from inside it and reads the counters. Records what it made in `made`.
fn confirm_enforcement(
    lock: &bpf::StateLock,
    root: &Path,
    made: &mut Made,
) -> Result<String, Failure> {
    let maps = made.maps.insert(bpf::install_programs(lock)?);
    leftovers::remove_stale(root, maps);

    let pid = process::id();
    let dir = root.join(format!("enforcer-check-{pid}"));
    fs::create_dir(&dir).map_err(|cause| Failure::CgroupDir {
        dir: dir.clone(),
        root: root.to_owned(),
        cause,
    })?;
    made.cgroup_dir = Some(dir.clone());
    let target = cgroup::resolve(&dir.to_string_lossy())?;
    let deny_all = policy::compile(&[(Action::Deny, policy::every_operation())], target.level)?;
    set_policy(maps, &target, deny_all).map_err(Failure::Attach)?;
    made.attached = Some(target.id);
    let before = counters(maps, target.id);

    let mount_dir = env::temp_dir().join(format!("enforcer-check-{pid}"));
    let _ = fs::remove_dir(&mount_dir);
    fs::create_dir(&mount_dir).map_err(|cause| Failure::MountDir {
        dir: mount_dir.clone(),
        cause,
    })?;
    made.mount_dir = Some(mount_dir.clone());

    let report = start(&dir, &mount_dir, &format!("enforcer-check-{pid}"))?;
    made.key_serial = report
        .get(attempt(Operation::Keyctl).call)
        .map(|outcome| outcome.ret)
        .filter(|ret| *ret > 0);
    let after = counters(maps, target.id);
    judge(&report, &before, &after, &target.path)
}

/// Checks each attempt's errno and that the counters moved by exactly one denial each.
fn judge(
    report: &CallReport,
    before: &Counters,
    after: &Counters,
    path: &str,
) -> Result<String, Failure> {
    let mut refused = Vec::new();
    let mut problems = Vec::new();
    for op in operations() {
        let attempt = attempt(op);
        let Some(&CallOutcome { ret, errno }) = report.get(attempt.call) else {
            problems.push(format!("the test process did not try {}", attempt.call));
            continue;
        };
        let delta = |action| after.get(action, op) - before.get(action, op);
        let (audited, denied, killed) = (
            delta(Action::Audit),
            delta(Action::Deny),
            delta(Action::Kill),
        );
        let name = op.name();
        // A kernel built without the call (kexec without CONFIG_KEXEC) has nothing to enforce.
        if ret < 0 && errno == libc::ENOSYS && (audited, denied, killed) == (0, 0, 0) {
            refused.push(format!("{} not in this kernel", attempt.call));
            continue;
        }
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
        return Err(Failure::NotConfirmed(problems));
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

/// How long the parent waits for the child.
pub(super) const TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `enforcer check-child` (this same binary) and returns its report.
pub(super) fn start(cgroup_dir: &Path, mount_dir: &Path, key: &str) -> Result<CallReport, Failure> {
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
        .map_err(Failure::StartChild)?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                // Our own child, by handle.
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::ChildTimeout);
            }
        }
    }
    let output = child.wait_with_output().map_err(Failure::ReadChild)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Failure::ChildFailed {
            status: output.status,
            stderr: stderr.trim().replace('\n', " "),
        });
    }
    serde_json::from_str(stdout.trim()).map_err(|cause| Failure::ChildReport {
        stdout: stdout.into_owned(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::Refusal;

    fn outcome(ret: i64, errno: i32) -> CallOutcome {
        CallOutcome { ret, errno }
    }

    #[test]
    fn judge_wants_one_counted_denial_each() {
        let report: CallReport = [
            ("settimeofday", outcome(-1, libc::EPERM)),
            ("mount", outcome(-1, libc::EPERM)),
            ("add_key", outcome(-1, libc::ENOKEY)),
            ("reboot", outcome(-1, libc::EPERM)),
            ("kexec_load", outcome(-1, libc::EPERM)),
        ]
        .into_iter()
        .map(|(call, outcome)| (call.to_owned(), outcome))
        .collect();
        let before = Counters::default();
        let mut after = Counters::default();
        for op in operations() {
            after.by_action[Action::Deny as usize][op as usize] = 1;
        }
        let found = judge(&report, &before, &after, "/enforcer-check-1")
            .unwrap_or_else(|failure| panic!("{failure}"));
        for refused in ["settimeofday EPERM", "mount EPERM", "add_key ENOKEY"] {
            assert!(found.contains(refused), "{found}");
        }

        after.by_action[Action::Deny as usize][Operation::Keyctl as usize] = 2;
        let failure = judge(&report, &before, &after, "/x").expect_err("two denials");
        assert!(
            failure
                .to_string()
                .contains("keyctl counters moved by 2 denials"),
            "{failure}"
        );

        let mut permitted = report.clone();
        permitted.insert("mount".to_owned(), outcome(0, 0));
        let failure = judge(&permitted, &before, &before, "/x").expect_err("permitted");
        assert!(
            failure.to_string().contains("mount was permitted"),
            "{failure}"
        );
        let mut without_kexec = report.clone();
        without_kexec.insert("kexec_load".to_owned(), outcome(-1, libc::ENOSYS));
        after.by_action[Action::Deny as usize][Operation::Keyctl as usize] = 1;
        after.by_action[Action::Deny as usize][Operation::Kexec as usize] = 0;
        let found = judge(&without_kexec, &before, &after, "/x")
            .unwrap_or_else(|failure| panic!("{failure}"));
        assert!(found.contains("kexec_load not in this kernel"), "{found}");
    }

    #[test]
    fn loader_messages_end_with_the_fix_check_names() {
        let dir = "/sys/fs/bpf/enforcer/v1".to_owned();
        let errors = [
            LoaderError::NotPrivileged,
            LoaderError::LsmInactive("lockdown,capability".to_owned()),
            LoaderError::LsmRefused("settime", Refusal::LsmListUnknown),
            LoaderError::NotInstalled(dir.clone()),
            LoaderError::NewerAbi {
                dir: dir.clone(),
                found: 3,
                ours: 2,
            },
            LoaderError::OlderAbi {
                dir: dir.clone(),
                found: 1,
                ours: 2,
            },
            LoaderError::UnknownAbi {
                dir: dir.clone(),
                found: 0,
                known: "v1".to_owned(),
            },
            LoaderError::AbiMismatch {
                dir,
                detail: "POLICIES: value size 40, not 48".to_owned(),
            },
            LoaderError::PartlyReplaced {
                replaced: 2,
                of: 9,
                source: Box::new(LoaderError::NotPrivileged),
            },
            LoaderError::NoBtf("no such file".to_owned()),
            LoaderError::KernelLayout(LayoutError::MissingField("cred.uid".to_owned())),
            LoaderError::BrokenObject("program", "capable"),
        ];
        for err in &errors {
            let fix = loader_fix(err);
            assert!(
                err.with_causes().ends_with(&fix),
                "the message does not end with the fix {fix:?}: {}",
                err.with_causes()
            );
        }
    }

    #[test]
    fn a_refused_load_takes_its_fix_from_the_refusal() {
        let active = Refusal::BpfActive {
            lsms: "capability,bpf".to_owned(),
            lockdown: None,
            seccomp: Some(2),
        };
        let failure = Failure::from(LoaderError::LsmRefused("capable", active.clone()));
        assert_eq!(failure.fix(), active.fix());
        assert!(!failure.to_string().contains("lsm="), "{failure}");
        let unknown = Failure::from(LoaderError::LsmRefused("settime", Refusal::LsmListUnknown));
        assert_eq!(
            unknown.fix(),
            "boot a kernel with CONFIG_BPF_LSM=y and bpf in lsm="
        );
        // Through `anyhow`, as the policy store returns it.
        let attach = Failure::Attach(
            anyhow::Error::from(LoaderError::NotPrivileged)
                .context("cannot sync the syscall layer"),
        );
        assert_eq!(attach.fix(), "run it as root");
        assert_eq!(
            attach.to_string(),
            "cannot attach the test policy: cannot sync the syscall layer: this needs root (CAP_SYS_ADMIN and CAP_BPF); run it as root"
        );
    }
}
