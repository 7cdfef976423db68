//! `enforcer daemon`: the node agent.
//!
//! It adopts the pinned programs (loading and pinning them only when absent), is the single
//! consumer of the ring buffer while it runs, writes every event as a JSON line to stdout, fans
//! the raw events out to any number of `enforcer tail` sessions over [`EVENT_SOCKET`], carries
//! out `attach`, `detach`, `apply` and `list` for the CLI over [`CONTROL_SOCKET`] (logging each
//! policy change as a `state` record on stdout), and serves Prometheus metrics when asked.
//! Enforcement never depends on it: it holds no link, so
//! stopping or killing it leaves every program, map and policy in force.
use std::{
    fs,
    io::{self, Write},
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use enforcer_common::Event;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::{
        broadcast::{
            self,
            error::{RecvError, TryRecvError},
        },
        mpsc, oneshot,
    },
};

use super::tail::Output;
use crate::{
    bpf,
    consumer::{Consumer, Sink},
    daemon::{
        self, Frame,
        control::{self, Client, Response},
        metrics::Metrics,
    },
    paths::{CONTROL_SOCKET, EVENT_SOCKET},
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
/// How long a control client gets to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests being carried out get, at shutdown, to finish and be answered.
const CONTROL_GRACE: Duration = Duration::from_secs(10);

pub fn run(args: Args, bpf: bpf::Bpf) -> Result<()> {
    // First, so that a second daemon changes nothing at all.
    let _instance = daemon::lock_instance()?;
    let installed = {
        let lock = bpf.lock()?;
        bpf::install_programs_with_outcome(&lock)?.1
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, bpf, installed))
}

async fn serve(args: Args, bpf: bpf::Bpf, installed: bpf::InstallOutcome) -> Result<()> {
    let metrics = Arc::new(Metrics::new(bpf));
    let mut events_id = bpf.pinned_events_id();
    let mut build = bpf.pinned_build();
    let mut consumer =
        Some(Consumer::new(bpf.open_event_maps()?).context("cannot watch the ring buffer")?);
    let (frames, _) = broadcast::channel(READER_QUEUE);
    let scrapes = match args.metrics {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?,
        ),
        None => None,
    };
    let readers = UnixListener::from_std(bind_socket(EVENT_SOCKET)?)
        .with_context(|| format!("cannot listen on {EVENT_SOCKET}"))?;
    // State records of the policy changes made for control clients, written beside the events.
    let (record_tx, mut records) = mpsc::unbounded_channel::<serde_json::Value>();
    let control = ControlServer::start(bind_socket(CONTROL_SOCKET)?, record_tx, bpf)?;
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
        "enforcer: daemon running (pid {}): {} {}; events as JSON lines on stdout and to `enforcer tail` through {EVENT_SOCKET}; policy changes through {}{metrics_note}",
        std::process::id(),
        installed.describe(),
        bpf.pin_dir().display(),
        CONTROL_SOCKET,
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
                Err(err) => eprintln!("enforcer: cannot accept a reader on {EVENT_SOCKET}: {err}"),
            },
            Some(record) = records.recv() => sink.state(&record),
            accepted = accept_scrape(scrapes.as_ref()) => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_scrape(stream, Arc::clone(&metrics)));
                }
                Err(err) => eprintln!("enforcer: cannot accept a metrics client: {err}"),
            },
            _ = pin_check.tick() => {
                follow_pins(bpf, &mut consumer, &mut events_id, &mut sink)?;
                follow_build(bpf, &mut build);
            }
        }
    };

    // New tails read the ring buffer themselves from now on; connected ones get what is queued.
    let _ = fs::remove_file(EVENT_SOCKET);
    // New CLI runs take the direct path; requests being carried out finish and are answered, and
    // their changes logged.
    let _ = fs::remove_file(CONTROL_SOCKET);
    let mut stopped = std::pin::pin!(control.stop());
    loop {
        tokio::select! {
            Some(record) = records.recv() => sink.state(&record),
            () = &mut stopped => break,
        }
    }
    while let Ok(record) = records.try_recv() {
        sink.state(&record);
    }
    if let Some(consumer) = &mut consumer {
        while consumer.drain_now(&mut sink)? {}
    }
    drop((sink, frames, reader_alive));
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, readers_finished.recv()).await;
    eprintln!(
        "enforcer: daemon stopped ({stopped_by}); programs, maps and policies stay pinned and enforcement continues (`enforcer reset` removes them)"
    );
    Ok(())
}

/// Creates a socket afresh (a daemon that was killed leaves its file behind), readable and
/// writable by root only; non-blocking, for tokio.
fn bind_socket(path: &str) -> Result<std::os::unix::net::UnixListener> {
    daemon::create_run_dir()?;
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot remove the old {path}")),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {path}"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {path} private"))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("cannot listen on {path}"))?;
    Ok(listener)
}

/// The control socket's server, on a thread (and runtime) of its own: a deny storm that keeps the
/// event loop draining the ring buffer never delays a CLI waiting for its answer.
struct ControlServer {
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
}

impl ControlServer {
    fn start(
        listener: std::os::unix::net::UnixListener,
        records: mpsc::UnboundedSender<serde_json::Value>,
        bpf: bpf::Bpf,
    ) -> Result<Self> {
        let (stop, stop_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the control socket's runtime")?;
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                runtime.block_on(serve_controls(listener, records, stop_rx, bpf));
                // Dropping the runtime waits for requests still being carried out.
                drop(runtime);
                let _ = done_tx.send(());
            })
            .context("cannot start the control socket's thread")?;
        Ok(Self { stop, done })
    }

    /// Stops accepting; resolves once the requests already read are carried out.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

/// Accepts control clients until told to stop, then gives the requests it has read
/// [`CONTROL_GRACE`] to be answered.
async fn serve_controls(
    listener: std::os::unix::net::UnixListener,
    records: mpsc::UnboundedSender<serde_json::Value>,
    mut stop: oneshot::Receiver<()>,
    bpf: bpf::Bpf,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "enforcer: cannot listen on {}: {err}; the CLI changes policies itself",
                CONTROL_SOCKET
            );
            let _ = fs::remove_file(CONTROL_SOCKET);
            return;
        }
    };
    // Each control task holds a sender; `recv` answers `None` once every one has finished.
    let (alive, mut finished) = mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_control(stream, records.clone(), alive.clone(), bpf));
                }
                Err(err) => {
                    eprintln!("enforcer: cannot accept a client on {}: {err}", CONTROL_SOCKET);
                }
            },
        }
    }
    drop((listener, alive));
    let _ = tokio::time::timeout(CONTROL_GRACE, finished.recv()).await;
}

/// Answers one control client: reads its request line, refuses it unless the peer is root
/// (`SO_PEERCRED`), carries it out on a blocking thread under the state lock, queues the state
/// records for stdout and writes the answer. A request that was read is carried out fully even if
/// its client goes away meanwhile.
async fn serve_control(
    stream: UnixStream,
    records: mpsc::UnboundedSender<serde_json::Value>,
    _alive: mpsc::Sender<()>,
    bpf: bpf::Bpf,
) {
    let peer = stream.peer_cred();
    let (from_client, mut to_client) = stream.into_split();
    let mut line = String::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        BufReader::new(from_client.take(control::MAX_REQUEST)).read_line(&mut line),
    )
    .await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    let response = match peer {
        Ok(cred) if cred.uid() == 0 => match control::decode(&line) {
            Ok(request) => {
                let client = Client {
                    uid: cred.uid(),
                    pid: cred.pid(),
                };
                match tokio::task::spawn_blocking(move || control::execute(bpf, request, client))
                    .await
                {
                    Ok((response, changes)) => {
                        for record in changes {
                            let _ = records.send(record);
                        }
                        response
                    }
                    Err(err) => Response::internal(format!(
                        "the enforcer daemon failed while carrying out the request: {err}"
                    )),
                }
            }
            Err(refusal) => refusal,
        },
        Ok(cred) => {
            eprintln!(
                "enforcer: refused a request on {} from uid {} (pid {}): only root may use it",
                CONTROL_SOCKET,
                cred.uid(),
                cred.pid()
                    .map_or_else(|| "?".to_owned(), |pid| pid.to_string())
            );
            Response::not_privileged()
        }
        Err(_) => Response::not_privileged(),
    };
    let _ = to_client.write_all(response.line().as_bytes()).await;
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

/// Says so when another build replaced the pinned programs in place: the maps, and so this
/// daemon's ring buffer, stay, and it reads on as it was (a layout migration shows as new pins).
fn follow_build(bpf: bpf::Bpf, build: &mut Option<u64>) {
    let pinned = bpf.pinned_build();
    if pinned == *build {
        return;
    }
    if let (Some(before), Some(now)) = (*build, pinned) {
        eprintln!(
            "enforcer: the programs under {} were replaced in place (build {before:016x} -> {now:016x}{}); same maps, the daemon reads on",
            bpf.pin_dir().display(),
            if now == bpf.build() {
                ", the daemon's own"
            } else {
                ""
            }
        );
    }
    *build = pinned;
}

/// Notices `enforcer reset` (the pinned ring buffer is gone: nothing is enforced, and the daemon
/// waits) and a later `enforcer attach` (new pins: the daemon reads their ring buffer). The daemon
/// never reinstalls by itself: a reset stays a reset.
fn follow_pins(
    bpf: bpf::Bpf,
    consumer: &mut Option<Consumer>,
    events_id: &mut Option<u32>,
    sink: &mut Fanout,
) -> io::Result<()> {
    let pinned = bpf.pinned_events_id();
    if pinned == *events_id {
        return Ok(());
    }
    if let Some(mut old) = consumer.take() {
        while old.drain_now(sink)? {}
    }
    match pinned {
        None => eprintln!(
            "enforcer: the pins under {} were removed (`enforcer reset`?): nothing is enforced; waiting for the next `enforcer attach`",
            bpf.pin_dir().display()
        ),
        // Still being installed: look again at the next check.
        Some(_) if !bpf.programs_pinned() => return Ok(()),
        Some(_) => match bpf
            .open_event_maps()
            .map_err(|err| io::Error::other(err.with_causes()))
            .and_then(Consumer::new)
        {
            Ok(new) => {
                *consumer = Some(new);
                eprintln!(
                    "enforcer: new pins under {}: reading their events",
                    bpf.pin_dir().display()
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
    /// One policy change, as a JSON line among the events.
    fn state(&mut self, record: &serde_json::Value) {
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
        let metrics = Metrics::new(bpf::Bpf::shipped());
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
        let metrics = Metrics::new(bpf::Bpf::shipped());
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
