//! Decoding violation records from the ring buffer and formatting them for people and machines.
use std::time::{Duration, SystemTime};

use enforcer_common::{
    Action, EVENT_V1_SIZE, EVENT_V2, EVENT_VERSION, Event, Hook, Operation, caps, kind, refused_by,
    source, string_slot, syscalls,
};
use serde_json::json;
use thiserror::Error;

use crate::cgroup::PathCache;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record of {0} bytes, expected {1}")]
    Size(usize, usize),
    #[error("event record version {0}, this build reads versions 1 to {EVENT_VERSION}")]
    Version(u16),
}

/// Copies a record out of the ring buffer (which gives no alignment guarantee for `Event`).
/// Version 1 records (an older build's programs, until an upgrade in place replaced them) are
/// read too: they are version 2 without the syscall-layer block at the end, all LSM events.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let size = size_of::<Event>();
    let version = match bytes.get(..2) {
        Some(raw) => u16::from_ne_bytes([raw[0], raw[1]]),
        None => return Err(DecodeError::Size(bytes.len(), size)),
    };
    let have = match version {
        1 => EVENT_V1_SIZE,
        EVENT_V2 | EVENT_VERSION => size,
        other => return Err(DecodeError::Version(other)),
    };
    if bytes.len() < have {
        return Err(DecodeError::Size(bytes.len(), have));
    }
    let mut full = [0u8; size_of::<Event>()];
    full[..have].copy_from_slice(&bytes[..have]);
    // SAFETY: `Event` is plain old data (integers only, explicit padding), so any bytes are a
    // valid value; read_unaligned copes with the array's alignment.
    let mut event = unsafe { full.as_ptr().cast::<Event>().read_unaligned() };
    // Version 2 is version 3 with every record a violation.
    event.version = EVENT_VERSION;
    if version == 1 {
        event.source = source::LSM;
        event.refused_by = if event.errno != 0 {
            refused_by::ENFORCER
        } else {
            refused_by::NONE
        };
        event.ret = -i64::from(event.errno);
    }
    Ok(event)
}

/// Which layer refused the call (`-` when it was not refused with EPERM/EACCES).
pub fn refused_by_name(event: &Event) -> &'static str {
    refused_by::name(event.refused_by).unwrap_or("-")
}

/// Converts `CLOCK_MONOTONIC` nanoseconds (the kernel's `bpf_ktime_get_ns`) to wall-clock time.
pub struct Clock {
    offset: Duration,
    behind: bool,
}

impl Clock {
    pub fn new() -> Self {
        let monotonic = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(Duration::from)
            .unwrap_or_default();
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        match wall.checked_sub(monotonic) {
            Some(offset) => Self {
                offset,
                behind: false,
            },
            None => Self {
                offset: monotonic - wall,
                behind: true,
            },
        }
    }

    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        let since_boot = Duration::from_nanos(ktime_ns);
        let since_epoch = if self.behind {
            since_boot.saturating_sub(self.offset)
        } else {
            since_boot + self.offset
        };
        SystemTime::UNIX_EPOCH + since_epoch
    }
}

fn comm(event: &Event) -> String {
    let end = event
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(event.comm.len());
    String::from_utf8_lossy(&event.comm[..end]).into_owned()
}

/// The operation, or for records about no operation their kind (`tamper`, `summary`).
fn op_name(event: &Event) -> &'static str {
    match event.kind {
        kind::VIOLATION => Operation::from_u8(event.op).map_or("unknown", Operation::name),
        other => kind::name(other),
    }
}

pub fn hook_name(event: &Event) -> &'static str {
    Hook::from_u8(event.hook).map_or("unknown", Hook::name)
}

fn action(event: &Event) -> Action {
    Action::from_u8(event.action).unwrap_or(Action::Deny)
}

/// A NUL-terminated string slot of the event, lossily as UTF-8.
fn string(event: &Event, slot: usize) -> String {
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

fn requested_time(event: &Event) -> Option<String> {
    (event.requested_sec >= 0).then(|| {
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(event.requested_sec as u64);
        humantime::format_rfc3339_seconds(when).to_string()
    })
}

/// What the caller tried, in words, e.g. `mount tmpfs none on /mnt/x`,
/// `settimeofday to 2035-01-01T00:00:00Z`, `add_key user "db-password"`.
pub fn detail(event: &Event) -> String {
    match event.kind {
        kind::TAMPER => return tamper_detail(event),
        kind::SUMMARY => return summary_detail(event),
        _ => {}
    }
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
    if event.source == source::SYSCALL {
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
fn tamper_detail(event: &Event) -> String {
    let arg = event.hook_arg;
    match Hook::from_u8(event.hook) {
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
        _ => format!("{} (argument {arg})", hook_name(event)),
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

/// Operation-specific fields of the JSON record.
fn operation_fields(event: &Event) -> serde_json::Value {
    match event.kind {
        kind::SUMMARY => {
            return json!({ "suppressed": {
                "count": event.hook_arg,
                "since_ktime_ns": event.args[0],
            }});
        }
        kind::TAMPER => return json!({ "tamper": { "target": event.hook_arg } }),
        _ => {}
    }
    match Operation::from_u8(event.op) {
        Some(Operation::Mount) => json!({ "mount": {
            "source": string(event, string_slot::SOURCE),
            "target": string(event, string_slot::TARGET),
            "fs_type": string(event, string_slot::FS_TYPE),
            "flags": (event.hook_arg != 0 && event.hook != Hook::Capable as u8).then_some(event.hook_arg),
        }}),
        Some(Operation::Keyctl) => json!({ "key": {
            "serial": (event.syscall == syscalls::KEYCTL).then_some(event.args[1] as i32),
            "type": string(event, string_slot::SOURCE),
            "description": string(event, string_slot::TARGET),
            "permission": (event.hook == Hook::KeyPermission as u8).then_some(event.hook_arg),
        }}),
        Some(Operation::Settime) => json!({ "time": {
            "requested_sec": (event.requested_sec >= 0).then_some(event.requested_sec),
            "requested": requested_time(event),
            "capability": (event.hook_arg == i64::from(caps::CAP_SYS_TIME)).then_some("CAP_SYS_TIME"),
        }}),
        Some(Operation::Reboot | Operation::Kexec) | None => json!({}),
    }
}

/// A decoded event with the context user space adds (wall time, cgroup path).
pub struct Rendered {
    pub time: SystemTime,
    pub cgroup_path: String,
    pub event: Event,
}

impl Rendered {
    pub fn new(event: Event, clock: &Clock, paths: &mut PathCache) -> Self {
        Self {
            time: clock.wall(event.ktime_ns),
            cgroup_path: paths.path(event.cgroup_id),
            event,
        }
    }

    pub fn action(&self) -> Action {
        action(&self.event)
    }

    /// The columns of a tail line, before alignment and colour.
    pub fn columns(&self) -> [String; 8] {
        let e = &self.event;
        [
            humantime::format_rfc3339_millis(self.time).to_string(),
            self.cgroup_path.clone(),
            e.pid.to_string(),
            comm(e),
            op_name(e).to_owned(),
            self.action().name().to_uppercase(),
            refused_by_name(e).to_owned(),
            detail(e),
        ]
    }

    /// One JSON object; field names follow the Elastic Common Schema where one exists (see the
    /// README's event schema).
    pub fn json(&self) -> serde_json::Value {
        let e = &self.event;
        let mut value = json!({
            "@timestamp": humantime::format_rfc3339_nanos(self.time).to_string(),
            "event": {
                "kind": if e.kind == kind::SUMMARY { "event" } else { "alert" },
                "action": op_name(e),
                "outcome": if e.errno == 0 { "success" } else { "failure" },
                "type": [if e.errno == 0 { "info" } else { "denied" }],
            },
            "enforcer": {
                "kind": kind::name(e.kind),
                "operation": op_name(e),
                "action": self.action().name(),
                "hook": hook_name(e),
                "errno": e.errno,
                "detail": detail(e),
                "policy_cgroup_id": e.policy_cgroup_id,
                "syscall": {
                    "nr": e.syscall,
                    "name": syscalls::name(e.syscall),
                    "args": e.args,
                    "ret": e.ret,
                    "compat": e.compat != 0,
                },
                "hook_arg": e.hook_arg,
                "source": if e.source == source::SYSCALL { "syscall" } else { "lsm" },
                "refused_by": refused_by::name(e.refused_by),
            },
            "process": {
                "pid": e.pid,
                "thread": { "id": e.tid },
                "name": comm(e),
            },
            "user": { "id": e.uid.to_string() },
            "group": { "id": e.gid.to_string() },
            "cgroup": { "id": e.cgroup_id, "path": self.cgroup_path },
        });
        if let (Some(fields), Some(target)) = (
            operation_fields(e).as_object().cloned(),
            value["enforcer"].as_object_mut(),
        ) {
            target.extend(fields);
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"date");
        Event {
            version: EVENT_VERSION,
            op: Operation::Settime as u8,
            hook: Hook::Capable as u8,
            action: Action::Deny as u8,
            kind: 0,
            _pad0w: 0,
            errno: 1,
            pid: 42,
            tid: 43,
            uid: 0,
            gid: 0,
            _pad1: 0,
            ktime_ns: 1_000_000_000,
            cgroup_id: 7,
            policy_cgroup_id: 7,
            comm,
            syscall: syscalls::SETTIMEOFDAY,
            args: [0x7ffd_0000, 0, 0, 0, 0, 0],
            hook_arg: 25,
            requested_sec: 1_893_456_000,
            strings: [[0; enforcer_common::EVENT_STR_LEN]; 3],
            source: source::LSM,
            refused_by: refused_by::ENFORCER,
            compat: 0,
            _pad2: 0,
            _pad2w: 0,
            ret: -1,
        }
    }

    fn bytes(event: &Event) -> Vec<u8> {
        // SAFETY: Event is plain old data.
        unsafe {
            std::slice::from_raw_parts((event as *const Event).cast::<u8>(), size_of::<Event>())
        }
        .to_vec()
    }

    #[test]
    fn decodes_what_the_kernel_writes() {
        let event = decode(&bytes(&sample())).unwrap();
        assert_eq!(event.pid, 42);
        assert_eq!(comm(&event), "date");
        assert_eq!(detail(&event), "settimeofday to 2030-01-01T00:00:00Z");
    }

    #[test]
    fn describes_a_mount_in_words() {
        let mut event = sample();
        event.op = Operation::Mount as u8;
        event.hook = Hook::SbMount as u8;
        event.syscall = syscalls::MOUNT;
        for (slot, text) in [(0, "none"), (1, "/mnt/x"), (2, "tmpfs")] {
            event.strings[slot][..text.len()].copy_from_slice(text.as_bytes());
        }
        assert_eq!(detail(&event), "mount tmpfs none on /mnt/x");
    }

    #[test]
    fn refuses_short_and_foreign_records() {
        assert_eq!(
            decode(&bytes(&sample())[..8]).unwrap_err(),
            DecodeError::Size(8, size_of::<Event>())
        );
        assert_eq!(
            decode(&[1]).unwrap_err(),
            DecodeError::Size(1, size_of::<Event>())
        );
        let mut v1 = bytes(&sample());
        v1[0..2].copy_from_slice(&1u16.to_ne_bytes());
        assert_eq!(
            decode(&v1[..EVENT_V1_SIZE - 1]).unwrap_err(),
            DecodeError::Size(EVENT_V1_SIZE - 1, EVENT_V1_SIZE)
        );
        let mut other = sample();
        other.version = 99;
        assert_eq!(
            decode(&bytes(&other)).unwrap_err(),
            DecodeError::Version(99)
        );
    }

    #[test]
    fn reads_version_1_records_as_lsm_events() {
        let mut v1 = bytes(&sample());
        v1.truncate(EVENT_V1_SIZE);
        v1[0..2].copy_from_slice(&1u16.to_ne_bytes());
        let event = decode(&v1).unwrap();
        assert_eq!(event.version, EVENT_VERSION);
        assert_eq!(event.pid, 42);
        assert_eq!(event.source, source::LSM);
        assert_eq!(refused_by_name(&event), "enforcer");
        assert_eq!(event.ret, -1);
    }

    #[test]
    fn json_names_the_layer_that_refused() {
        let mut event = sample();
        event.source = source::SYSCALL;
        event.hook = Hook::SysExit as u8;
        event.refused_by = refused_by::SECCOMP;
        let rendered = Rendered {
            time: SystemTime::UNIX_EPOCH,
            cgroup_path: "/demo".into(),
            event,
        };
        let value = rendered.json();
        assert_eq!(value["enforcer"]["source"], "syscall");
        assert_eq!(value["enforcer"]["refused_by"], "seccomp");
        assert_eq!(value["enforcer"]["hook"], "sys_exit");
        assert_eq!(value["enforcer"]["syscall"]["ret"], -1);
        assert_eq!(rendered.columns()[6], "seccomp");
        assert_eq!(
            rendered.columns()[7],
            "settimeofday to 2030-01-01T00:00:00Z = -1 EPERM"
        );
    }

    #[test]
    fn json_carries_the_schema_fields() {
        let rendered = Rendered {
            time: SystemTime::UNIX_EPOCH,
            cgroup_path: "/demo".into(),
            event: sample(),
        };
        let value = rendered.json();
        assert_eq!(value["process"]["pid"], 42);
        assert_eq!(value["enforcer"]["action"], "deny");
        assert_eq!(value["event"]["outcome"], "failure");
        assert_eq!(value["cgroup"]["path"], "/demo");
        assert_eq!(value["enforcer"]["time"]["requested_sec"], 1_893_456_000);
    }
}
