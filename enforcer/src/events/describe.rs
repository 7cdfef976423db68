//! An event in words: the process name, the call's name and what the caller tried, shared by the
//! text columns and the JSON record.
use std::time::{Duration, SystemTime};

use enforcer_common::{Event, Hook, string_slot, syscalls};

use super::{Kind, Record, Source};

pub fn comm(event: &Event) -> String {
    let end = event
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(event.comm.len());
    String::from_utf8_lossy(&event.comm[..end]).into_owned()
}

/// A NUL-terminated string slot of the event, lossily as UTF-8.
pub fn string(event: &Event, slot: usize) -> String {
    let bytes = &event.strings[slot];
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The system call's name, or its number when this build does not know it; a 32-bit caller's
/// call says so.
pub fn syscall_name(event: &Event) -> String {
    let name = match syscalls::name(event.syscall) {
        Some(name) => name.to_owned(),
        None if event.syscall < 0 => "-".to_owned(),
        None => format!("syscall {}", event.syscall),
    };
    if event.compat != 0 {
        format!("{name} (32-bit)")
    } else {
        name
    }
}

fn keyctl_command(cmd: u64) -> Option<&'static str> {
    Some(match cmd {
        0 => "get_keyring_id",
        1 => "join_session_keyring",
        2 => "update",
        4 => "revoke",
        5 => "setperm",
        6 => "describe",
        7 => "clear",
        8 => "link",
        9 => "unlink",
        10 => "search",
        11 => "read",
        _ => return None,
    })
}

pub fn requested_time(event: &Event) -> Option<String> {
    (event.requested_sec >= 0).then(|| {
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(event.requested_sec as u64);
        humantime::format_rfc3339_seconds(when).to_string()
    })
}

/// What the caller tried, in words, e.g. `mount tmpfs none on /mnt/x`,
/// `settimeofday to 2035-01-01T00:00:00Z`, `add_key user "db-password"`.
pub fn detail(record: &Record) -> String {
    match record.kind {
        Kind::Tamper => return tamper_detail(record),
        Kind::Summary => return summary_detail(&record.raw),
        Kind::Violation => {}
    }
    let event = &record.raw;
    let call = syscall_name(event);
    let source = string(event, string_slot::SOURCE);
    let target = string(event, string_slot::TARGET);
    let fs_type = string(event, string_slot::FS_TYPE);
    let mut words: Vec<String> = match event.syscall {
        syscalls::SETTIMEOFDAY | syscalls::CLOCK_SETTIME => match requested_time(event) {
            Some(when) => vec![call, "to".into(), when],
            None => vec![call],
        },
        syscalls::MOUNT => vec![call, fs_type, source, "on".into(), target],
        syscalls::MOVE_MOUNT | syscalls::PIVOT_ROOT => vec![call, source, "to".into(), target],
        syscalls::ADD_KEY | syscalls::REQUEST_KEY => vec![call, source, format!("\"{target}\"")],
        syscalls::RMDIR | syscalls::UNLINK | syscalls::UNLINKAT => {
            vec![call, target, "(a mount point)".into()]
        }
        syscalls::RENAME | syscalls::RENAMEAT | syscalls::RENAMEAT2 => {
            vec![call, source, "to".into(), target, "(a mount point)".into()]
        }
        syscalls::KEYCTL => vec![
            call,
            keyctl_command(event.args[0]).map_or_else(|| event.args[0].to_string(), str::to_owned),
            format!("key {}", event.args[1] as i32),
        ],
        _ => vec![call, fs_type, target],
    };
    if record.source == Source::Syscall {
        // The syscall layer saw the call return: `= 0`, `= -1 EPERM`.
        words.push(if event.errno != 0 {
            format!("= -1 {:?}", nix::errno::Errno::from_raw(event.errno))
        } else {
            format!("= {}", event.ret)
        });
    }
    words
        .into_iter()
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `bpf()` commands a tamper record can name.
fn bpf_command(cmd: i64) -> String {
    match cmd {
        5 => "BPF_PROG_LOAD".into(),
        29 => "BPF_LINK_UPDATE".into(),
        30 => "BPF_LINK_GET_FD_BY_ID".into(),
        34 => "BPF_LINK_DETACH".into(),
        other => format!("bpf command {other}"),
    }
}

/// What a refused tamper attempt reached for.
fn tamper_detail(record: &Record) -> String {
    let event = &record.raw;
    let arg = event.hook_arg;
    match record.hook {
        Some(Hook::Bpf) if arg >> 32 == 5 => format!(
            "BPF_PROG_LOAD of a program that could override the enforcer (type {})",
            arg & 0xffff_ffff
        ),
        Some(Hook::Bpf) => format!(
            "{} of the enforcer's link {}",
            bpf_command(arg >> 32),
            arg & 0xffff_ffff
        ),
        Some(Hook::BpfMap) => format!("a file descriptor for the enforcer's map {arg}"),
        Some(Hook::BpfProg) => format!("a file descriptor for the enforcer's program {arg}"),
        Some(Hook::PtraceAccessCheck) => {
            format!("ptrace or memory access to the runtime's setup process {arg}")
        }
        Some(Hook::PtraceTraceme) => format!("PTRACE_TRACEME by a setup process, tracer {arg}"),
        Some(Hook::InodeUnlink | Hook::InodeRmdir | Hook::InodeRename) => {
            let path = string(event, string_slot::TARGET);
            format!("{} of the enforcer's pin {path}", syscall_name(event))
        }
        _ => format!("{} (argument {arg})", record.hook_name()),
    }
}

/// How many events a policy's budget suppressed, and since when.
fn summary_detail(event: &Event) -> String {
    let since_ms = event.ktime_ns.saturating_sub(event.args[0]) / 1_000_000;
    format!(
        "{} events of this policy suppressed in the last {since_ms} ms (over its event budget; the counters have them all)",
        event.hook_arg
    )
}
