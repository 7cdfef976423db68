//! The self-test's process: `enforcer check-child`, the same binary started by `check`. It joins
//! the throwaway cgroup, makes each operation's call once and prints what each returned, as one
//! JSON object keyed by call name. It never judges: the parent compares the calls with the
//! kernel's counters.
use std::{
    collections::BTreeMap,
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt,
    path::Path,
    process::{self, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::selftest::{Failure, Targets, attempt, operations};

/// How long the parent waits for the child.
pub(super) const TIMEOUT: Duration = Duration::from_secs(30);
const KEY_SPEC_USER_KEYRING: libc::c_long = -4;

/// What one call returned: `ret`, and `errno` when it is negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CallOutcome {
    pub ret: i64,
    pub errno: i32,
}

/// The child's report: each call's outcome by call name.
pub(super) type CallReport = BTreeMap<String, CallOutcome>;

impl CallOutcome {
    /// The outcome of a call that just returned `ret` (errno read right away).
    fn of(ret: i64) -> Self {
        let errno = if ret < 0 {
            io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        };
        Self { ret, errno }
    }
}

/// The child's body: joins `cgroup`, tries every operation and prints the [`CallReport`].
pub fn run(cgroup: &Path, mount_dir: &Path, key: &str) -> Result<()> {
    fs::write(cgroup.join("cgroup.procs"), process::id().to_string())
        .with_context(|| format!("cannot join {}", cgroup.display()))?;
    // Events name the command: `enforcer-check`, not `exe` (the name of /proc/self/exe).
    // SAFETY: a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"enforcer-check".as_ptr()) };
    let targets = Targets {
        mount_dir: CString::new(mount_dir.as_os_str().as_bytes())?,
        key: CString::new(key)?,
    };
    let report: CallReport = operations()
        .map(|op| {
            let attempt = attempt(op);
            (attempt.call.to_owned(), (attempt.make)(&targets))
        })
        .collect();
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// settimeofday(NULL, NULL): reads nothing and changes nothing; it still passes the CAP_SYS_TIME
/// check, which the `capable` program guards.
pub(super) fn settimeofday(_: &Targets) -> CallOutcome {
    // SAFETY: null pointers are what the call takes for "no change".
    CallOutcome::of(unsafe {
        libc::syscall(
            libc::SYS_settimeofday,
            std::ptr::null::<libc::c_void>(),
            std::ptr::null::<libc::c_void>(),
        )
    })
}

/// A tmpfs on the empty mount directory, taken away again at once if it was not refused.
pub(super) fn mount_tmpfs(targets: &Targets) -> CallOutcome {
    let target = targets.mount_dir.as_ptr();
    // SAFETY: NUL-terminated strings; no data.
    let outcome = CallOutcome::of(i64::from(unsafe {
        libc::mount(
            c"none".as_ptr(),
            target,
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    }));
    if outcome.ret == 0 {
        // Not enforced: take it away again (the parent checks too).
        // SAFETY: NUL-terminated path.
        unsafe { libc::umount2(target, libc::MNT_DETACH) };
    }
    outcome
}

/// A `user` key in the user keyring (the parent invalidates it if it was not refused).
pub(super) fn add_user_key(targets: &Targets) -> CallOutcome {
    let payload = b"enforcer";
    // SAFETY: NUL-terminated strings, payload pointer and length match.
    CallOutcome::of(unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            targets.key.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_USER_KEYRING,
        )
    })
}

/// reboot(2) with wrong magic numbers: the kernel checks CAP_SYS_BOOT first, then refuses the
/// magic with EINVAL, so the call never reboots. Never pass the real magic here.
pub(super) fn reboot_wrong_magic(_: &Targets) -> CallOutcome {
    const WRONG_MAGIC: libc::c_long = 0;
    // SAFETY: integer arguments only; the wrong magic makes the kernel refuse the call.
    CallOutcome::of(unsafe {
        libc::syscall(
            libc::SYS_reboot,
            WRONG_MAGIC,
            WRONG_MAGIC,
            libc::LINUX_REBOOT_CMD_CAD_OFF,
            std::ptr::null::<libc::c_void>(),
        )
    })
}

/// kexec_load with a flag no kernel defines: the kernel checks CAP_SYS_BOOT first, then refuses
/// the flags with EINVAL, so nothing is loaded (or unloaded, as no segments would).
pub(super) fn kexec_load_bad_flags(_: &Targets) -> CallOutcome {
    const UNDEFINED_FLAG: libc::c_ulong = 0x8000;
    // SAFETY: no segments and a null segment pointer; the flag makes the kernel refuse the call.
    CallOutcome::of(unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            std::ptr::null::<libc::c_void>(),
            UNDEFINED_FLAG,
        )
    })
}

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
