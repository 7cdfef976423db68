//! The violation event path in user space, one way: the ring buffer's records are decoded once
//! into a typed [`Record`] ([`consumer`], or the daemon's stream through [`follow()`]), handed to a
//! [`Sink`] (`tail`'s [`Output`], the daemon's fan-out and metrics, `record`'s tally), and
//! rendered as text or JSON in one place ([`Rendered`]).
mod clock;
pub mod consumer;
mod describe;
mod follow;
mod json;
mod output;
mod record;
mod text;

use std::{io, time::SystemTime};

use enforcer_common::{EVENT_V1_SIZE, EVENT_V2, EVENT_VERSION, Event, refused_by, source};
use thiserror::Error;

pub use self::{
    clock::Clock,
    follow::{Filter, FollowError, PodFilter, follow},
    output::Output,
    record::{Kind, Record, RefusedBy, Source},
};
use crate::{cgroup::PathCache, kubernetes::names::PodRef, workload::Workload};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record of {0} bytes, expected {1}")]
    Size(usize, usize),
    #[error("event record version {0}, this build reads versions 1 to {EVENT_VERSION}")]
    Version(u16),
}

/// Copies a record out of the ring buffer (which gives no alignment guarantee for `Event`) and
/// reads it into a [`Record`].
///
/// Version 1 records (an older build's programs, until an upgrade in place replaced them) are
/// read too: they are version 2 without the syscall-layer block at the end, all LSM events.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
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
    Ok(event.into())
}

/// Where decoded events go: the same calls whether they come from the ring buffer or from the
/// daemon's stream.
pub trait Sink {
    type Error: From<io::Error>;
    /// A source of events is open: before the first event, and again after a hand-over from the
    /// ring buffer to the daemon's stream.
    fn started(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    /// One decoded event.
    fn event(&mut self, record: &Record) -> Result<(), Self::Error>;
    /// One decoded event and the Kubernetes names of its cgroup (from the daemon's node agent);
    /// a sink that has no use for them takes it as a plain event.
    fn named_event(&mut self, record: &Record, names: &PodRef) -> Result<(), Self::Error> {
        let _ = names;
        self.event(record)
    }
    /// `count` events were lost since the last report because the ring buffer was full.
    fn dropped(&mut self, count: u64) -> Result<(), Self::Error>;
    /// `count` events never reached this reader: it read the daemon's stream too slowly (lost
    /// all the same, so counted as drops unless the sink says otherwise).
    fn lagged(&mut self, count: u64) -> Result<(), Self::Error> {
        self.dropped(count)
    }
    /// After every drain; `tick` when a timer caused it (a place for periodic checks).
    fn drained(&mut self, tick: bool) -> Result<(), Self::Error>;
}

/// An event with the context user space adds: wall time, cgroup path, the workload that path
/// names and, from the daemon's node agent, the Kubernetes names of the cgroup.
pub struct Rendered {
    pub time: SystemTime,
    pub cgroup_path: String,
    pub workload: Option<Workload>,
    pub kubernetes: Option<PodRef>,
    pub record: Record,
}

impl Rendered {
    pub fn new(record: Record, clock: &mut Clock, paths: &mut PathCache) -> Self {
        let cgroup_path = paths.path(record.raw.cgroup_id);
        Self {
            time: clock.wall(record.raw.ktime_ns),
            workload: crate::workload::workload(&cgroup_path),
            kubernetes: None,
            cgroup_path,
            record,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use enforcer_common::{Action, Hook, Operation, syscalls};

    use super::{describe::detail, *};

    /// A denied `settimeofday`, as the capable hook reports it.
    pub(crate) fn sample() -> Event {
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
        let record = decode(&bytes(&sample())).unwrap();
        assert_eq!(record.raw.pid, 42);
        assert_eq!(describe::comm(&record.raw), "date");
        assert_eq!(record.operation, Some(Operation::Settime));
        assert_eq!(record.action, Action::Deny);
        assert_eq!(detail(&record), "settimeofday to 2030-01-01T00:00:00Z");
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
        assert_eq!(detail(&event.into()), "mount tmpfs none on /mnt/x");
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
        let record = decode(&v1).unwrap();
        assert_eq!(record.raw.version, EVENT_VERSION);
        assert_eq!(record.raw.pid, 42);
        assert_eq!(record.source, Source::Lsm);
        assert_eq!(record.refused_by, Some(RefusedBy::Enforcer));
        assert_eq!(record.raw.ret, -1);
    }
}
