//! What the self-test tries, per operation: the call the child makes, how the kernel refuses it
//! under `deny`, and what it acts on. One exhaustive `match` over [`Operation`], so a new
//! operation does not compile until the self-test tries it. Shared by the child (which makes the
//! calls) and the parent (which judges them).
use std::{collections::BTreeMap, ffi::CString, io};

use enforcer_common::{OPERATIONS, Operation};
use serde::{Deserialize, Serialize};

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

/// What the child's calls act on; the parent makes them and removes them afterwards.
pub(super) struct Targets {
    /// An empty directory to try mounting a tmpfs on.
    pub mount_dir: CString,
    /// Description of the `user` key to try adding.
    pub key: CString,
}

/// One guarded operation the child tries, and how the kernel refuses it under `deny`.
pub(super) struct Attempt {
    /// The system call, as the child's report names it.
    pub call: &'static str,
    /// The errnos of a refusal.
    pub refused_with: &'static [i32],
    /// Makes the call in this process.
    pub make: fn(&Targets) -> CallOutcome,
}

/// The attempt for `op`. Every operation has one, so a new operation does not compile until the
/// self-test tries it.
pub(super) fn attempt(op: Operation) -> Attempt {
    match op {
        Operation::Settime => Attempt {
            call: "settimeofday",
            refused_with: &[libc::EPERM],
            make: settimeofday,
        },
        Operation::Mount => Attempt {
            call: "mount",
            refused_with: &[libc::EPERM],
            make: mount_tmpfs,
        },
        Operation::Keyctl => Attempt {
            call: "add_key",
            // The keys code reports a refused keyring lookup as ENOKEY (and a refused creation
            // of the user keyring, when root has none yet, as EPERM).
            refused_with: &[libc::ENOKEY, libc::EPERM],
            make: add_user_key,
        },
        Operation::Reboot => Attempt {
            call: "reboot",
            refused_with: &[libc::EPERM],
            make: reboot_wrong_magic,
        },
        Operation::Kexec => Attempt {
            call: "kexec_load",
            refused_with: &[libc::EPERM],
            make: kexec_load_bad_flags,
        },
    }
}

/// Every operation, in the order of the operation table.
pub(super) fn operations() -> impl Iterator<Item = Operation> {
    OPERATIONS.iter().map(|spec| spec.op)
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
