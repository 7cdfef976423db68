//! `enforcer daemon`: the node agent.
//!
//! It adopts the pinned programs (loading and pinning them only when absent), is the single
//! consumer of the ring buffer while it runs, writes every event as a JSON line to stdout, fans
//! the raw events out to any number of `enforcer tail` sessions over [`daemon::SOCKET`], and
//! serves Prometheus metrics when asked. Enforcement never depends on it: it holds no link, so
//! stopping or killing it leaves every program, map and policy in force.
use std::{fs, io, net::SocketAddr, os::unix::fs::PermissionsExt, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use enforcer_common::{ABI_VERSION, Event};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::{
        broadcast::{
            self,
            error::{RecvError, TryRecvError},
        },
        mpsc,
    },
};

use super::tail::Output;
use crate::{
    consumer::{Consumer, Sink},
    daemon::{self, Frame, SOCKET, metrics::Metrics},
    loader,
};

#[derive(clap::Args)]
pub struct Args {
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given), e.g. 127.0.0.1:9477.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

/// Frames a reader may fall behind by before it misses some (and is told how many).
const READER_QUEUE: usize = 4096;
/// Bytes of frames written to a reader at once.
const WRITE_BATCH: usize = 64 * 1024;
/// How often the daemon checks that the ring buffer it reads is still the pinned one.
const PIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long readers get, at shutdown, to receive what was queued for them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a metrics client gets to send its request and read the answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(args: Args) -> Result<()> {
    // First, so that a second daemon changes nothing at all.
    let _instance = daemon::lock_instance()?;
    let adopted = {
        let lock = loader::lock()?;
        let adopted = loader::installed();
        loader::install(&lock)?;
        adopted
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, adopted))
}

async fn serve(args: Args, adopted: bool) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let mut events_id = loader::pinned_events_id();
    let mut consumer =
        Some(Consumer::new(loader::open_event_maps()?).context("cannot watch the ring buffer")?);
    let (frames, _) = broadcast::channel(READER_QUEUE);
    let scrapes = match args.metrics {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?,
        ),
        None => None,
    };
    let readers = bind_socket()?;
    let mut sink = Fanout {
        stdout: Some(Output::new(true, None)),
        frames: frames.clone(),
        metrics: Arc::clone(&metrics),
    };
    // Each reader task holds a sender; `recv` answers `None` once every one has finished.
    let (reader_alive, mut readers_finished) = mpsc::channel::<()>(1);
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut pin_check = tokio::time::interval(PIN_CHECK_INTERVAL);

    let metrics_note = match &scrapes {
        Some(listener) => format!(
            "; metrics on http://{}/metrics",
            listener
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string())
        ),
        None => String::new(),
    };
    eprintln!(
        "enforcer: daemon running (pid {}): {} {}/v{ABI_VERSION}; events as JSON lines on stdout and to `enforcer tail` through {SOCKET}{metrics_note}",
        std::process::id(),
        if adopted {
            "adopted the pinned programs under"
        } else {
            "loaded and pinned the programs under"
        },
        loader::PIN_BASE,
    );

    let stopped_by = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            drained = next_events(consumer.as_mut(), &mut sink) => drained?,
            accepted = readers.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_reader(
                        stream,
                        frames.subscribe(),
                        Arc::clone(&metrics),
                        reader_alive.clone(),
                    ));
                }
                Err(err) => eprintln!("enforcer: cannot accept a reader on {SOCKET}: {err}"),
            },
            accepted = accept_scrape(scrapes.as_ref()) => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_scrape(stream, Arc::clone(&metrics)));
                }
                Err(err) => eprintln!("enforcer: cannot accept a metrics client: {err}"),
            },
            _ = pin_check.tick() => follow_pins(&mut consumer, &mut events_id, &mut sink)?,
        }
    };

    // New tails read the ring buffer themselves from now on; connected ones get what is queued.
    let _ = fs::remove_file(SOCKET);
    if let Some(consumer) = &mut consumer {
        consumer.drain_now(&mut sink)?;
    }
    drop((sink, frames, reader_alive));
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, readers_finished.recv()).await;
    eprintln!(
        "enforcer: daemon stopped ({stopped_by}); programs, maps and policies stay pinned and enforcement continues (`enforcer reset` removes them)"
    );
    Ok(())
}

/// Creates the event stream's socket afresh (a daemon that was killed leaves its file behind),
/// readable and writable by root only.
fn bind_socket() -> Result<UnixListener> {
    daemon::create_run_dir()?;
    match fs::remove_file(SOCKET) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot remove the old {SOCKET}")),
    }
    let listener =
        UnixListener::bind(SOCKET).with_context(|| format!("cannot listen on {SOCKET}"))?;
    fs::set_permissions(SOCKET, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {SOCKET} private"))?;
    Ok(listener)
}

async fn next_events(consumer: Option<&mut Consumer>, sink: &mut Fanout) -> io::Result<()> {
    match consumer {
        Some(consumer) => consumer.next(sink).await,
        None => std::future::pending().await,
    }
}

async fn accept_scrape(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Notices `enforcer reset` (the pinned ring buffer is gone: nothing is enforced, and the daemon
/// waits) and a later `enforcer attach` (new pins: the daemon reads their ring buffer). The daemon
/// never reinstalls by itself: a reset stays a reset.
fn follow_pins(
    consumer: &mut Option<Consumer>,
    events_id: &mut Option<u32>,
    sink: &mut Fanout,
) -> io::Result<()> {
    let pinned = loader::pinned_events_id();
    if pinned == *events_id {
        return Ok(());
    }
    if let Some(mut old) = consumer.take() {
        old.drain_now(sink)?;
    }
    match pinned {
        None => eprintln!(
            "enforcer: the pins under {}/v{ABI_VERSION} were removed (`enforcer reset`?): nothing is enforced; waiting for the next `enforcer attach`",
            loader::PIN_BASE
        ),
        // Still being installed: look again at the next check.
        Some(_) if !loader::installed() => return Ok(()),
        Some(_) => match loader::open_event_maps()
            .map_err(io::Error::other)
            .and_then(Consumer::new)
        {
            Ok(new) => {
                *consumer = Some(new);
                eprintln!(
                    "enforcer: new pins under {}/v{ABI_VERSION}: reading their events",
                    loader::PIN_BASE
                );
            }
            Err(err) => {
                eprintln!("enforcer: cannot open the new pins (retrying): {err}");
                return Ok(());
            }
        },
    }
    *events_id = pinned;
    Ok(())
}

/// Where the consumer's events go: the readers' queues, stdout, the counters.
struct Fanout {
    /// `None` once writing to stdout failed (events still reach readers and metrics).
    stdout: Option<Output>,
    frames: broadcast::Sender<Frame>,
    metrics: Arc<Metrics>,
}

impl Fanout {
    fn write(&mut self, write: impl FnOnce(&mut Output) -> io::Result<()>) {
        if let Some(out) = &mut self.stdout
            && let Err(err) = write(out)
        {
            eprintln!(
                "enforcer: stopped writing events to stdout: {err}; readers of {SOCKET} and the metrics still get them"
            );
            self.stdout = None;
        }
    }
}

impl Sink for Fanout {
    type Error = io::Error;

    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.metrics.delivered.inc();
        // Fails only when no reader is connected.
        let _ = self.frames.send(Frame::Event(*event));
        self.write(|out| out.event(*event));
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
async fn serve_reader(
    stream: UnixStream,
    mut frames: broadcast::Receiver<Frame>,
    metrics: Arc<Metrics>,
    _alive: mpsc::Sender<()>,
) {
    metrics.readers.inc();
    let (mut from_reader, mut to_reader) = stream.into_split();
    let mut wire = Vec::with_capacity(WRITE_BATCH + size_of::<Event>() + 1);
    if to_reader
        .write_all(daemon::greeting().as_bytes())
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

/// Answers one HTTP/1.x request: `GET /metrics` gets the exposition, read from the kernel now.
async fn serve_scrape(mut stream: TcpStream, metrics: Arc<Metrics>) {
    let mut head = Vec::new();
    let read = tokio::time::timeout(SCRAPE_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n")
            && !head.windows(2).any(|w| w == b"\n\n")
            && head.len() < 8192
        {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        io::Result::Ok(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return;
    }
    let response = respond(&String::from_utf8_lossy(&head), &metrics);
    let _ = tokio::time::timeout(SCRAPE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

fn respond(request: &str, metrics: &Metrics) -> String {
    let mut words = request.lines().next().unwrap_or("").split_whitespace();
    let method = words.next().unwrap_or("");
    let path = words.next().unwrap_or("").split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.encode(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "enforcer serves /metrics only\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "enforcer answers GET /metrics only\n".to_owned(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_gets_the_exposition() {
        let metrics = Metrics::new();
        metrics.delivered.inc_by(3);
        let ok = respond("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &metrics);
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("enforcer_events_delivered_total 3\n"), "{ok}");
        assert!(
            ok.contains("# TYPE enforcer_events_dropped_total counter"),
            "{ok}"
        );
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));

        let head_only = respond("HEAD /metrics HTTP/1.1\r\n\r\n", &metrics);
        assert!(head_only.ends_with("\r\n\r\n"));
        assert!(respond("GET / HTTP/1.1\r\n\r\n", &metrics).starts_with("HTTP/1.1 404"));
        assert!(respond("POST /metrics HTTP/1.1\r\n\r\n", &metrics).starts_with("HTTP/1.1 405"));
    }

    #[test]
    fn a_lagging_reader_is_told_how_much_it_missed() {
        let metrics = Metrics::new();
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
}
