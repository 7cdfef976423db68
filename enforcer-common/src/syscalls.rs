//! System call numbers and the rules that judge a call by its number, shared by the LSM programs
//! (the `capable` and key hooks narrow themselves to these calls), the syscall layer and the
//! event decoder, so both layers judge every call the same way.
//!
//! The numbers, names and string arguments of each family's calls are generated from its
//! `operations!` row (in `ops.rs`) and re-exported here; what is written here is the rules that
//! hold for every call (32-bit and x32 numbering, calls newer than this build, clock changes).
//!
//! x86_64 numbers are canonical. A 32-bit (ia32) caller's numbers go through [`ia32::native`],
//! an x32 caller's (bit 30 set) through [`x32::native`]; [`native`] picks the right one.

use crate::Operation;
pub use crate::ops::calls::*;

/// One guarded system call, as its `operations!` row says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSpec {
    /// x86_64 number.
    pub nr: i64,
    pub name: &'static str,
    pub op: Operation,
    /// It meets no dedicated hook, only its family's capability check ([`judged_at_capability`]).
    pub at_capability: bool,
    pub ia32: Ia32,
    /// [`string_args`].
    pub strings: [usize; 3],
}

/// How a 32-bit (ia32) caller numbers a call: every row must say, so none is forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ia32 {
    /// Its numbers in the ia32 table (several when older forms make the same call).
    Numbers(&'static [i64]),
    /// The same number in both tables (the mount API from 428 on).
    Same,
    /// No 32-bit form.
    None,
}

/// The newest x86_64 system call number of the table this build was verified against, and the
/// kernel it comes from (6.17 added `file_getattr` 468 and `file_setattr` 469; 6.18 added none).
/// A call numbered above it is newer than this build: see [`is_mount_api_without_hook`].
pub const NEWEST_VERIFIED: i64 = 469;
pub const VERIFIED_KERNEL: (u32, u32) = (6, 18);

/// The x86_64 number of the call a caller made with `raw`: `compat` is the kernel's mark of a
/// 32-bit (ia32) call (`TS_COMPAT`); an x32 call has bit 30 set. -1 for a 32-bit call the
/// enforcer does not guard.
#[inline(always)]
pub const fn native(raw: i64, compat: bool) -> i64 {
    if compat {
        ia32::native(raw)
    } else {
        x32::native(raw)
    }
}

/// The x32 ABI (64-bit registers, 32-bit pointers): the x86_64 numbers with bit 30 set, where
/// the calls below 512 are the x86_64 calls themselves and 512 to 547 are x32 forms of calls
/// that pass structures holding pointers. Kernels built without `CONFIG_X86_X32_ABI` (Debian's)
/// refuse such numbers with ENOSYS; kernels with it run them, so they are judged as the call
/// they make.
pub mod x32 {
    pub const BIT: i64 = 0x4000_0000;

    /// The x86_64 number of the call `nr` makes when bit 30 is set (512 to 547 are the x32 forms
    /// of the calls below, `syscall_64.tbl`); `nr` itself otherwise.
    #[inline(always)]
    pub const fn native(nr: i64) -> i64 {
        if nr < 0 || nr & BIT == 0 {
            return nr;
        }
        // A match, not a table: the BPF verifier cannot bound an index into a static array.
        match nr & !BIT {
            n @ 0..512 => n,
            512 => 13,  // rt_sigaction
            513 => 15,  // rt_sigreturn
            514 => 16,  // ioctl
            515 => 19,  // readv
            516 => 20,  // writev
            517 => 45,  // recvfrom
            518 => 46,  // sendmsg
            519 => 47,  // recvmsg
            520 => 59,  // execve
            521 => 101, // ptrace
            522 => 127, // rt_sigpending
            523 => 128, // rt_sigtimedwait
            524 => 129, // rt_sigqueueinfo
            525 => 131, // sigaltstack
            526 => 222, // timer_create
            527 => 244, // mq_notify
            528 => 246, // kexec_load
            529 => 247, // waitid
            530 => 273, // set_robust_list
            531 => 274, // get_robust_list
            532 => 278, // vmsplice
            533 => 279, // move_pages
            534 => 295, // preadv
            535 => 296, // pwritev
            536 => 297, // rt_tgsigqueueinfo
            537 => 299, // recvmmsg
            538 => 307, // sendmmsg
            539 => 310, // process_vm_readv
            540 => 311, // process_vm_writev
            541 => 54,  // setsockopt
            542 => 55,  // getsockopt
            543 => 206, // io_setup
            544 => 209, // io_submit
            545 => 322, // execveat
            546 => 327, // preadv2
            547 => 328, // pwritev2
            n => n,
        }
    }
}

/// Mount-family calls that reach no dedicated mount hook, only their `CAP_SYS_ADMIN` check (the
/// same numbers for 64-bit and 32-bit callers). mount, umount2, pivot_root and move_mount are
/// left to their own hooks, which see the mount objects. A `CAP_SYS_ADMIN` check made by a call
/// newer than [`NEWEST_VERIFIED`] counts too: a mount call a later kernel adds is guarded by its
/// capability check before this table knows its name (fail closed; `enforcer check` warns on
/// such kernels).
pub const fn is_mount_api_without_hook(nr: i64) -> bool {
    matches!(judged_at_capability(nr), Some(Operation::Mount)) || nr > NEWEST_VERIFIED
}

/// `CLOCK_REALTIME`: the only clock `clock_settime` and `clock_adjtime` change through the
/// system clock's capability check (the others refuse `clock_settime` with EINVAL; dynamic
/// POSIX clocks, PTP devices, are judged by their file's mode instead).
pub const CLOCK_REALTIME: u64 = 0;

/// How to tell whether a clock call changes the clock, from its arguments alone; the kernel
/// checks `CAP_SYS_TIME` exactly when it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockCall {
    /// settimeofday (and the 32-bit stime): always checked, even with NULL arguments.
    Always,
    /// clock_settime: a change when argument 0 is `CLOCK_REALTIME`.
    Settime,
    /// adjtimex: a change when the `modes` of the `struct timex` at argument 0 ask for one.
    Adjtimex,
    /// clock_adjtime: a change on `CLOCK_REALTIME` (argument 0) whose `struct timex` at argument
    /// 1 asks for one.
    ClockAdjtime,
}

pub const fn clock_call(nr: i64) -> Option<ClockCall> {
    match nr {
        SETTIMEOFDAY => Some(ClockCall::Always),
        CLOCK_SETTIME => Some(ClockCall::Settime),
        ADJTIMEX => Some(ClockCall::Adjtimex),
        CLOCK_ADJTIME => Some(ClockCall::ClockAdjtime),
        _ => None,
    }
}

const ADJ_ADJTIME: u32 = 0x8000;
const ADJ_OFFSET_READONLY: u32 = 0x2000;

/// Whether a `struct timex` whose `modes` (its first field) is `modes` asks `adjtimex` to change
/// the clock: the kernel's own rule (`timekeeping_validate_timex`), which checks `CAP_SYS_TIME`
/// exactly for these. A read (`modes == 0`, `ADJ_OFFSET_SS_READ`) changes nothing.
pub const fn timex_changes_clock(modes: u32) -> bool {
    if modes & ADJ_ADJTIME != 0 {
        modes & ADJ_OFFSET_READONLY == 0
    } else {
        modes != 0
    }
}

/// No argument: past the six a system call has, so `args.get(NO_ARG)` is `None`. (A plain
/// index instead of `Option` keeps undefined payload bytes out of the BPF code, which the
/// verifier rejects when the compiler spills them.)
pub const NO_ARG: usize = 6;

/// Which argument points at the requested time (`timeval`/`timespec`, seconds first).
pub const fn time_arg(nr: i64) -> usize {
    match nr {
        SETTIMEOFDAY => 0,
        CLOCK_SETTIME => 1,
        _ => NO_ARG,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x32_calls_are_judged_as_their_native_call() {
        for nr in GUARDED {
            assert_eq!(native(nr | x32::BIT, false), nr, "{nr}");
            assert_eq!(operation(native(nr | x32::BIT, false)), operation(nr));
        }
        // The x32-only range maps to the calls it stands for.
        assert_eq!(x32::native(521 | x32::BIT), 101, "ptrace");
        assert_eq!(x32::native(528 | x32::BIT), 246, "kexec_load");
        assert_eq!(x32::native(540 | x32::BIT), 311, "process_vm_writev");
        assert_eq!(x32::native(547 | x32::BIT), 328, "pwritev2");
        // Without the bit, and for the no-call marker, nothing changes.
        assert_eq!(native(MOUNT, false), MOUNT);
        assert_eq!(native(-1, false), -1);
        // An x32 number of an unguarded call stays unguarded.
        assert_eq!(operation(native(39 | x32::BIT, false)), None);
    }

    #[test]
    fn ia32_calls_are_judged_as_their_native_call() {
        assert_eq!(native(ia32::SETTIMEOFDAY, true), SETTIMEOFDAY);
        assert_eq!(native(ia32::STIME, true), SETTIMEOFDAY);
        // ia32 164 is setresuid, not settimeofday.
        assert_eq!(operation(native(164, true)), None);
        assert_eq!(native(OPEN_TREE_ATTR, true), OPEN_TREE_ATTR);
        assert_eq!(native(FSOPEN, true), FSOPEN);
        assert_eq!(native(ia32::REBOOT, true), REBOOT);
        assert_eq!(native(ia32::KEXEC_LOAD, true), KEXEC_LOAD);
        // ia32 320 is utimensat; kexec_file_load has no 32-bit form.
        assert_eq!(operation(native(KEXEC_FILE_LOAD, true)), None);
        // x86_64 88 is symlink, 283 timerfd_create.
        assert_eq!(operation(native(ia32::REBOOT, false)), None);
        assert_eq!(operation(native(ia32::KEXEC_LOAD, false)), None);
    }

    #[test]
    fn calls_newer_than_the_verified_table_are_mount_calls_at_their_capability_check() {
        assert!(is_mount_api_without_hook(OPEN_TREE_ATTR));
        assert!(is_mount_api_without_hook(NEWEST_VERIFIED + 1));
        assert!(!is_mount_api_without_hook(NEWEST_VERIFIED));
        assert!(!is_mount_api_without_hook(-1));
        assert!(!is_mount_api_without_hook(MOUNT), "mount has its own hook");
        assert_eq!(operation(OPEN_TREE_ATTR), Some(Operation::Mount));
    }

    #[test]
    fn clock_reads_are_not_clock_changes() {
        assert!(!timex_changes_clock(0));
        // ADJ_OFFSET_SS_READ = ADJ_OFFSET_SINGLESHOT | ADJ_OFFSET_READONLY.
        assert!(!timex_changes_clock(0xa001));
        assert!(timex_changes_clock(0x8001), "ADJ_OFFSET_SINGLESHOT");
        assert!(timex_changes_clock(0x0001), "ADJ_OFFSET");
        assert!(timex_changes_clock(0x0004), "ADJ_MAXERROR");
        assert_eq!(clock_call(SETTIMEOFDAY), Some(ClockCall::Always));
        assert_eq!(clock_call(MOUNT), None);
    }

    #[test]
    fn every_call_says_how_32_bit_callers_number_it() {
        for call in CALLS {
            let nr = call.nr;
            match call.ia32 {
                Ia32::Numbers(numbers) => {
                    for &raw in numbers {
                        assert_eq!(ia32::native(raw), nr, "{} ia32 {raw}", call.name);
                    }
                }
                Ia32::Same => assert_eq!(ia32::native(nr), nr, "{}", call.name),
                Ia32::None => assert!(
                    (0..=NEWEST_VERIFIED).all(|raw| ia32::native(raw) != nr),
                    "{}",
                    call.name
                ),
            }
            assert_eq!(native(nr | x32::BIT, false), nr, "{} x32", call.name);
            assert_eq!(name(nr), Some(call.name));
            assert_eq!(operation(nr), Some(call.op));
        }
        assert_eq!(GUARDED.len(), CALLS.len());
        assert!(GUARDED.iter().zip(CALLS).all(|(&nr, call)| nr == call.nr));
    }

    #[test]
    fn the_same_numbered_range_holds_only_same_numbered_calls() {
        for call in CALLS {
            if (ia32::SAME_FIRST..=ia32::SAME_LAST).contains(&call.nr) {
                assert_eq!(call.ia32, Ia32::Same, "{}", call.name);
            }
        }
    }

    #[test]
    fn calls_judged_at_a_capability_check_are_the_ones_capable_narrows_to() {
        for nr in -1..=NEWEST_VERIFIED + 2 {
            // `time` narrows CAP_SYS_TIME to the clock calls, `mount` CAP_SYS_ADMIN to the mount
            // API without a hook.
            assert_eq!(
                clock_call(nr).is_some(),
                judged_at_capability(nr) == Some(Operation::Settime),
                "{nr}"
            );
            if judged_at_capability(nr) == Some(Operation::Mount) {
                assert!(is_mount_api_without_hook(nr), "{nr}");
            }
            // `boot` narrows CAP_SYS_BOOT to reboot and the kexec calls, all judged there.
            assert_eq!(
                matches!(nr, REBOOT | KEXEC_LOAD | KEXEC_FILE_LOAD),
                matches!(
                    judged_at_capability(nr),
                    Some(Operation::Reboot | Operation::Kexec)
                ),
                "{nr}"
            );
        }
    }
}
