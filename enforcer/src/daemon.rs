//! `enforcer daemon`'s files and its event stream's wire format, shared by the daemon (the agent
//! in [`agent`]) and its readers ([`crate::events::follow`]).
//!
//! The stream is a Unix stream socket at [`EVENT_SOCKET`] (mode 0600 in a 0700 directory: root only).
//! The daemon first writes one line, `enforcer-events <ABI_VERSION> frames <FRAME_VERSION>`,
//! followed by ` kubernetes` when the daemon has the node agent's names, then `\n`; then frames,
//! each a kind byte and a payload:
//!
//! | kind | payload |
//! |---|---|
//! | `E` | one `enforcer_common::Event`, its raw bytes as the kernel wrote them |
//! | `N` | an event as for `E`, then a `u32` size and that many bytes: the Kubernetes names of its cgroup, NUL-separated (namespace, pod, pod uid, container or empty, then each policy) |
//! | `D` | `u64`: events lost since the last such frame because the ring buffer was full |
//! | `L` | `u64`: events this reader missed because it read too slowly (its queue overflowed) |
//!
//! Integers are in the host's byte order: the stream never leaves the machine. A reader sends
//! nothing; closing its end unsubscribes it.
pub mod agent;
pub mod control;
mod control_server;
mod fanout;
pub mod health;
mod http;
pub mod metrics;
pub mod requests;

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use bytes::{Buf, BytesMut};
use enforcer_common::{ABI_VERSION, Event};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use tokio::{io::AsyncReadExt, net::UnixStream};

use crate::{
    bpf::LoaderError,
    error::ExitError,
    events::{self, Record},
    kubernetes::names::PodRef,
    paths::{DAEMON_LOCK, EVENT_SOCKET, RUN_DIR},
};

/// The frame format's version, in the greeting: a reader of another one stops with a clear
/// message rather than misreading frames.
const FRAME_VERSION: u32 = 2;
const KIND_EVENT: u8 = b'E';
const KIND_NAMED: u8 = b'N';
const KIND_DROPPED: u8 = b'D';
const KIND_LAGGED: u8 = b'L';
const EVENT_SIZE: usize = size_of::<Event>();
const COUNT_SIZE: usize = size_of::<u64>();
const NAMES_SIZE: usize = size_of::<u32>();
/// The largest names payload (Kubernetes names are at most 253 bytes each: only a very long list
/// of policies comes near it, and those past it are left out).
const MAX_NAMES: usize = 16 * 1024;

/// The first line of the stream; `kubernetes` when the events carry the node agent's names.
pub fn greeting(kubernetes: bool) -> String {
    let names = if kubernetes { " kubernetes" } else { "" };
    format!("enforcer-events {ABI_VERSION} frames {FRAME_VERSION}{names}\n")
}

/// One unit of the event stream. Its events travel unboxed: nearly every frame is one, and
/// boxing would cost an allocation per event.
#[derive(Clone, Debug)]
pub enum Frame {
    /// Its raw record travels; the reader decodes it as the daemon did.
    Event(Record),
    /// An event and the Kubernetes names of its cgroup.
    Named(Record, Arc<PodRef>),
    /// Lost by the kernel: the ring buffer was full.
    Dropped(u64),
    /// Lost by this reader: it fell behind the daemon.
    Lagged(u64),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("the daemon sent a frame of unknown kind {0:#04x}")]
    UnknownKind(u8),
    #[error("the daemon sent an unreadable event: {0}")]
    Event(#[from] events::DecodeError),
    #[error("the daemon sent unreadable Kubernetes names ({0} bytes)")]
    Names(usize),
}

impl Frame {
    /// Appends the frame's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Event(record) => {
                out.push(KIND_EVENT);
                encode_event(record, out);
            }
            Self::Named(record, names) => {
                out.push(KIND_NAMED);
                encode_event(record, out);
                let names = encode_names(names);
                out.extend_from_slice(&(names.len() as u32).to_ne_bytes());
                out.extend_from_slice(&names);
            }
            Self::Dropped(count) => {
                out.push(KIND_DROPPED);
                out.extend_from_slice(&count.to_ne_bytes());
            }
            Self::Lagged(count) => {
                out.push(KIND_LAGGED);
                out.extend_from_slice(&count.to_ne_bytes());
            }
        }
    }

    /// Takes one whole frame off the front of `buf`; `None` until a whole frame is there.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Self>, ProtocolError> {
        let Some(&kind) = buf.first() else {
            return Ok(None);
        };
        let size = match kind {
            KIND_EVENT => EVENT_SIZE,
            KIND_NAMED => {
                let Some(size) = buf.get(1 + EVENT_SIZE..1 + EVENT_SIZE + NAMES_SIZE) else {
                    return Ok(None);
                };
                let names = u32::from_ne_bytes(size.try_into().expect("4 bytes")) as usize;
                if names > MAX_NAMES {
                    return Err(ProtocolError::Names(names));
                }
                EVENT_SIZE + NAMES_SIZE + names
            }
            KIND_DROPPED | KIND_LAGGED => COUNT_SIZE,
            other => return Err(ProtocolError::UnknownKind(other)),
        };
        if buf.len() < 1 + size {
            return Ok(None);
        }
        buf.advance(1);
        let payload = buf.split_to(size);
        let count = || u64::from_ne_bytes(payload[..COUNT_SIZE].try_into().expect("8 bytes"));
        Ok(Some(match kind {
            KIND_EVENT => Self::Event(events::decode(&payload)?),
            KIND_NAMED => Self::Named(
                events::decode(&payload[..EVENT_SIZE])?,
                Arc::new(decode_names(&payload[EVENT_SIZE + NAMES_SIZE..])?),
            ),
            KIND_DROPPED => Self::Dropped(count()),
            _ => Self::Lagged(count()),
        }))
    }
}

fn encode_event(record: &Record, out: &mut Vec<u8>) {
    let event = &record.raw;
    // SAFETY: `Event` is plain old data (integers only, explicit padding fields), so all of its
    // `size_of::<Event>()` bytes are initialised.
    let bytes =
        unsafe { std::slice::from_raw_parts((event as *const Event).cast::<u8>(), EVENT_SIZE) };
    out.extend_from_slice(bytes);
}

/// NUL-separated: no Kubernetes name holds a NUL. Policies past [`MAX_NAMES`] are left out.
fn encode_names(names: &PodRef) -> Vec<u8> {
    let mut fields = vec![
        names.namespace.as_str(),
        names.pod.as_str(),
        names.pod_uid.as_str(),
        names.container.as_deref().unwrap_or(""),
    ];
    let mut size = fields.iter().map(|f| f.len() + 1).sum::<usize>();
    for policy in &names.policies {
        size += policy.len() + 1;
        if size > MAX_NAMES {
            break;
        }
        fields.push(policy);
    }
    fields.join("\0").into_bytes()
}

fn decode_names(bytes: &[u8]) -> Result<PodRef, ProtocolError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ProtocolError::Names(bytes.len()))?;
    let mut fields = text.split('\0').map(str::to_owned);
    let mut next = || fields.next().ok_or(ProtocolError::Names(bytes.len()));
    let (namespace, pod, pod_uid, container) = (next()?, next()?, next()?, next()?);
    Ok(PodRef {
        namespace,
        pod,
        pod_uid,
        container: (!container.is_empty()).then_some(container),
        policies: fields.collect(),
    })
}

/// Creates [`RUN_DIR`] (mode 0700), or makes an existing one 0700.
pub fn create_run_dir() -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(RUN_DIR) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            fs::set_permissions(RUN_DIR, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {RUN_DIR} private"))
        }
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            Err(LoaderError::NotPrivileged.into())
        }
        Err(err) => Err(err).with_context(|| format!("cannot create {RUN_DIR}")),
    }
}

/// Proof that this process is the one running daemon; released when dropped (or when the process
/// dies, however it dies).
pub struct InstanceLock(
    #[expect(
        dead_code,
        reason = "held for its drop: the lock lives as long as the value"
    )]
    Flock<File>,
);

/// Takes the daemon lock without waiting: a second daemon gets an [`ExitError`] (already running)
/// and changes nothing.
pub fn lock_instance() -> Result<InstanceLock> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LoaderError::NotPrivileged.into());
    }
    create_run_dir()?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(DAEMON_LOCK)
        .with_context(|| format!("cannot open {DAEMON_LOCK}"))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            // The pid is for the message a second daemon prints; the lock itself is the flock.
            lock.set_len(0)
                .and_then(|()| lock.rewind())
                .and_then(|()| writeln!(lock, "{}", std::process::id()))
                .with_context(|| format!("cannot write {DAEMON_LOCK}"))?;
            Ok(InstanceLock(lock))
        }
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = match pid.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            Err(ExitError::already_running(format!(
                "an enforcer daemon is already running{pid}, holding {DAEMON_LOCK}; read its events with `enforcer tail`, or stop it first"
            ))
            .into())
        }
        Err((_, errno)) => Err(anyhow!("cannot lock {DAEMON_LOCK}: {errno}")),
    }
}

/// How long a daemon may take to greet a new reader.
const GREETING_TIMEOUT: Duration = Duration::from_secs(5);

/// The running daemon's event stream, past its greeting.
pub struct EventStream {
    pub stream: UnixStream,
    /// The daemon has the Kubernetes node agent's names: its events carry them.
    pub kubernetes: bool,
}

/// Connects to the running daemon's event stream and reads its greeting. `None` when no daemon
/// accepts (no socket, a stale one, or no permission: the caller then reads the ring buffer itself,
/// which reports a missing privilege in its own words).
pub async fn connect() -> Result<Option<EventStream>> {
    if !Path::new(EVENT_SOCKET).exists() {
        return Ok(None);
    }
    let Ok(mut stream) = UnixStream::connect(EVENT_SOCKET).await else {
        return Ok(None);
    };
    let expected = greeting(false);
    let mut line = Vec::new();
    let read = async {
        // Byte by byte, so nothing after the line is consumed here.
        while line.last() != Some(&b'\n') && line.len() < 64 {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).await? == 0 {
                break;
            }
            line.push(byte[0]);
        }
        io::Result::Ok(())
    };
    match tokio::time::timeout(GREETING_TIMEOUT, read).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(err).context(format!("cannot read from {EVENT_SOCKET}")),
        Err(_) => anyhow::bail!(
            "the enforcer daemon at {EVENT_SOCKET} did not answer within {GREETING_TIMEOUT:?}; check it is healthy (its stderr), or stop it to read the ring buffer directly"
        ),
    }
    let kubernetes = line == greeting(true).as_bytes();
    if line != expected.as_bytes() && !kubernetes {
        anyhow::bail!(
            "the enforcer daemon at {EVENT_SOCKET} speaks {:?}, this enforcer reads {:?}; run the enforcer binary of the same version as the daemon",
            String::from_utf8_lossy(&line).trim_end(),
            expected.trim_end()
        );
    }
    Ok(Some(EventStream { stream, kubernetes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            version: enforcer_common::EVENT_VERSION,
            op: 2,
            hook: 0,
            action: 2,
            kind: 0,
            _pad0w: 0,
            errno: 1,
            pid: 4242,
            tid: 4243,
            uid: 0,
            gid: 0,
            _pad1: 0,
            ktime_ns: 123,
            cgroup_id: 77,
            policy_cgroup_id: 77,
            comm: *b"probe\0\0\0\0\0\0\0\0\0\0\0",
            syscall: 164,
            args: [1, 2, 3, 4, 5, 6],
            hook_arg: 25,
            requested_sec: -1,
            strings: [[0; enforcer_common::EVENT_STR_LEN]; 3],
            source: 0,
            refused_by: 0,
            compat: 0,
            _pad2: 0,
            _pad2w: 0,
            ret: 0,
        }
    }

    #[test]
    fn frames_round_trip_whole_and_in_pieces() {
        let mut wire = Vec::new();
        Frame::Event(sample().into()).encode(&mut wire);
        Frame::Dropped(5).encode(&mut wire);
        Frame::Lagged(7).encode(&mut wire);
        assert_eq!(wire.len(), 1 + EVENT_SIZE + 2 * (1 + 8));
        let names = PodRef {
            namespace: "shop".into(),
            pod: "web-1".into(),
            pod_uid: "1234".into(),
            container: Some("nginx".into()),
            policies: vec!["shop/no-mount".into(), "baseline".into()],
        };
        Frame::Named(sample().into(), Arc::new(names.clone())).encode(&mut wire);
        Frame::Named(
            sample().into(),
            Arc::new(PodRef {
                container: None,
                policies: Vec::new(),
                ..names.clone()
            }),
        )
        .encode(&mut wire);

        // Fed one byte at a time, each frame comes out once it is whole, and only then.
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in wire {
            buf.extend_from_slice(&[byte]);
            while let Some(frame) = Frame::decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(frames.len(), 5);
        match &frames[0] {
            Frame::Event(record) => {
                let event = record.raw;
                assert_eq!(event.pid, 4242);
                assert_eq!(event.cgroup_id, 77);
                assert_eq!(&event.comm[..5], b"probe");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(frames[1], Frame::Dropped(5)));
        assert!(matches!(frames[2], Frame::Lagged(7)));
        match &frames[3] {
            Frame::Named(record, got) => {
                assert_eq!(record.raw.pid, 4242);
                assert_eq!(**got, names);
            }
            other => panic!("{other:?}"),
        }
        match &frames[4] {
            Frame::Named(_, got) => {
                assert_eq!(got.container, None);
                assert!(got.policies.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_frames_are_refused() {
        let mut buf = BytesMut::from(&b"X12345678"[..]);
        assert_eq!(
            Frame::decode(&mut buf).unwrap_err(),
            ProtocolError::UnknownKind(b'X')
        );
    }

    #[test]
    fn the_greeting_names_the_abi_and_the_frames() {
        assert_eq!(
            greeting(false),
            format!("enforcer-events {ABI_VERSION} frames 2\n")
        );
        assert_eq!(
            greeting(true),
            format!("enforcer-events {ABI_VERSION} frames 2 kubernetes\n")
        );
    }
}
