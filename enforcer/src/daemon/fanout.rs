//! Where the daemon's events go: stdout (JSON lines), the counters, and the queues of the
//! readers of the event stream, each served by a task of its own. With the Kubernetes node
//! agent's names, each event takes its cgroup's names along to all of them.
use std::{
    io::{self, Write},
    sync::Arc,
};

use enforcer_common::Event;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    sync::{
        broadcast::{
            self,
            error::{RecvError, TryRecvError},
        },
        mpsc,
    },
};

use super::{Frame, metrics::Metrics};
use crate::{
    events::{Output, Record, Sink},
    kubernetes::names::Names,
    paths::EVENT_SOCKET,
};

/// Frames a reader may fall behind by before it misses some (and is told how many).
pub const READER_QUEUE: usize = 4096;
/// Bytes of frames written to a reader at once.
const WRITE_BATCH: usize = 64 * 1024;

/// Where the consumer's events go: the readers' queues, stdout, the counters.
pub struct Fanout {
    /// `None` once writing to stdout failed (events still reach readers and metrics).
    stdout: Option<Output>,
    frames: broadcast::Sender<Frame>,
    metrics: Arc<Metrics>,
    names: Option<Names>,
}

impl Fanout {
    pub fn new(
        frames: broadcast::Sender<Frame>,
        metrics: Arc<Metrics>,
        names: Option<Names>,
    ) -> Self {
        Self {
            stdout: Some(Output::new(true)),
            frames,
            metrics,
            names,
        }
    }

    /// One policy change, as a JSON line among the events.
    pub fn state(&mut self, record: &serde_json::Value) {
        self.write(|out| {
            out.flush()?;
            let mut stdout = io::stdout().lock();
            writeln!(stdout, "{record}")?;
            stdout.flush()
        });
    }

    fn write(&mut self, write: impl FnOnce(&mut Output) -> io::Result<()>) {
        if let Some(out) = &mut self.stdout
            && let Err(err) = write(out)
        {
            eprintln!(
                "enforcer: stopped writing events to stdout: {err}; readers of {EVENT_SOCKET} and the metrics still get them"
            );
            self.stdout = None;
        }
    }
}

impl Sink for Fanout {
    type Error = io::Error;

    fn event(&mut self, record: &Record) -> io::Result<()> {
        self.metrics.delivered.inc();
        let names = self
            .names
            .as_ref()
            .and_then(|names| names.of_event(record.raw.cgroup_id, record.raw.policy_cgroup_id));
        match names {
            Some(names) => {
                let names = Arc::new(names);
                // Fails only when no reader is connected.
                let _ = self.frames.send(Frame::Named(*record, Arc::clone(&names)));
                self.write(|out| out.named_event(record, &names));
            }
            None => {
                let _ = self.frames.send(Frame::Event(*record));
                self.write(|out| out.event(record));
            }
        }
        Ok(())
    }

    fn dropped(&mut self, count: u64) -> io::Result<()> {
        self.metrics.dropped.inc_by(count);
        let _ = self.frames.send(Frame::Dropped(count));
        self.write(|out| out.dropped(count));
        Ok(())
    }

    fn drained(&mut self, _tick: bool) -> io::Result<()> {
        self.write(Output::flush);
        Ok(())
    }
}

/// Streams frames to one reader until it goes away or the daemon stops. A slow reader only slows
/// itself: its queue is bounded, and what it missed reaches it as one `Lagged` frame.
/// `kubernetes`: the daemon has the node agent's names (its greeting says so).
pub async fn serve_reader(
    stream: UnixStream,
    mut frames: broadcast::Receiver<Frame>,
    metrics: Arc<Metrics>,
    kubernetes: bool,
    _alive: mpsc::Sender<()>,
) {
    metrics.readers.inc();
    let (mut from_reader, mut to_reader) = stream.into_split();
    let mut wire = Vec::with_capacity(WRITE_BATCH + size_of::<Event>() + 1);
    if to_reader
        .write_all(super::greeting(kubernetes).as_bytes())
        .await
        .is_ok()
    {
        let mut ignored = [0u8; 64];
        loop {
            tokio::select! {
                // A reader sends nothing: the end of its input means it went away.
                read = from_reader.read(&mut ignored) => {
                    if matches!(read, Ok(0) | Err(_)) {
                        break;
                    }
                }
                first = frames.recv() => {
                    wire.clear();
                    let open = batch(first, &mut frames, &mut wire, &metrics);
                    if to_reader.write_all(&wire).await.is_err() || !open {
                        break;
                    }
                }
            }
        }
    }
    metrics.readers.dec();
}

/// Encodes `first` and whatever else is queued (up to about [`WRITE_BATCH`] bytes) into `wire`;
/// false once the daemon is stopping and the queue is empty.
fn batch(
    first: Result<Frame, RecvError>,
    frames: &mut broadcast::Receiver<Frame>,
    wire: &mut Vec<u8>,
    metrics: &Metrics,
) -> bool {
    let mut next = first;
    loop {
        match next {
            Ok(frame) => frame.encode(wire),
            Err(RecvError::Lagged(missed)) => {
                metrics.reader_dropped.inc_by(missed);
                Frame::Lagged(missed).encode(wire);
            }
            Err(RecvError::Closed) => return false,
        }
        if wire.len() >= WRITE_BATCH {
            return true;
        }
        next = match frames.try_recv() {
            Ok(frame) => Ok(frame),
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
            Err(TryRecvError::Closed) => Err(RecvError::Closed),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lagging_reader_is_told_how_much_it_missed() {
        let metrics = Metrics::new(crate::bpf::Bpf::shipped(), None);
        let (tx, mut rx) = broadcast::channel(2);
        for n in 0..5 {
            tx.send(Frame::Dropped(n)).unwrap();
        }
        let mut wire = Vec::new();
        let first = rx.try_recv().map_err(|err| match err {
            TryRecvError::Lagged(n) => RecvError::Lagged(n),
            _ => RecvError::Closed,
        });
        assert!(batch(first, &mut rx, &mut wire, &metrics));
        let mut buf = bytes::BytesMut::from(&wire[..]);
        let mut frames = Vec::new();
        while let Some(frame) = Frame::decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        assert!(matches!(frames[0], Frame::Lagged(3)), "{frames:?}");
        assert!(matches!(frames[1], Frame::Dropped(3)));
        assert!(matches!(frames[2], Frame::Dropped(4)));
        assert_eq!(metrics.reader_dropped.get(), 3);

        drop(tx);
        let mut wire = Vec::new();
        assert!(!batch(
            rx.try_recv().map_err(|_| RecvError::Closed),
            &mut rx,
            &mut wire,
            &metrics
        ));
    }

    #[test]
    fn events_of_named_cgroups_take_their_names_to_the_readers() {
        use crate::kubernetes::names::PodRef;

        let names = Names::default();
        let pod = PodRef {
            namespace: "shop".into(),
            pod: "web-1".into(),
            pod_uid: "u".into(),
            container: Some("nginx".into()),
            policies: vec!["shop/no-mount".into()],
        };
        let mut event = crate::events::tests::sample();
        event.policy_cgroup_id = 70;
        names.set(70, pod.clone());
        let metrics = Arc::new(Metrics::new(crate::bpf::Bpf::shipped(), None));
        let (tx, mut rx) = broadcast::channel(4);
        let mut fanout = Fanout::new(tx, metrics, Some(names.clone()));
        // Not on stdout: the test's output is not the place.
        fanout.stdout = None;
        fanout.event(&event.into()).unwrap();
        names.remove(70);
        fanout.event(&event.into()).unwrap();
        match rx.try_recv().unwrap() {
            Frame::Named(record, got) => {
                assert_eq!(record.raw.pid, event.pid);
                assert_eq!(*got, pod);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(rx.try_recv().unwrap(), Frame::Event(_)));
    }
}
