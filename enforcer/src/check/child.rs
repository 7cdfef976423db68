//! The self-test's process: `enforcer check-child`, the same binary started by `check`. It joins
//! the throwaway cgroup, makes each operation's call once and prints what each returned, as one
//! JSON object keyed by call name. It never judges: the parent compares the calls with the
//! kernel's counters.
use std::{ffi::CString, fs, os::unix::ffi::OsStrExt, path::Path, process};

use anyhow::{Context, Result};

use super::attempts::{CallReport, Targets, attempt, operations};

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
