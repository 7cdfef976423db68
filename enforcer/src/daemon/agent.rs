//! The node agent behind `enforcer daemon`.
//!
//! It is the single consumer of the ring buffer while it runs, writes every event as a JSON line
//! to stdout, fans the raw events out to any number of readers over [`EVENT_SOCKET`], carries out
//! policy changes for the CLI over [`CONTROL_SOCKET`] (logging each as a `state` record on
//! stdout), serves Prometheus metrics and the `/healthz` and `/readyz` probes when asked, and
//! follows the pins as `enforcer reset` and a later `attach` replace them. Given the Kubernetes
//! node agent's names, its events and metrics carry them.
use std::{
    fs, io,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    net::{TcpListener, UnixListener},
    signal::unix::{SignalKind, signal},
    sync::{broadcast, mpsc},
};

use super::{
    control_server::ControlServer,
    fanout::{self, Fanout, READER_QUEUE},
    health::Health,
    http,
    metrics::Metrics,
};
use crate::{
    bpf,
    events::consumer::Consumer,
    kubernetes::names::Names,
    paths::{CONTROL_SOCKET, EVENT_SOCKET},
};

/// How often the daemon checks that the ring buffer it reads is still the pinned one.
const PIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long readers get, at shutdown, to receive what was queued for them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the daemon installed before serving.
#[derive(Clone, Copy, Debug)]
pub enum Installed {
    /// The LSM programs (and the maps), with what the install found.
    Programs(bpf::InstallOutcome),
    /// The maps only (`--layer syscall`, for kernels without BPF LSM): the syscall layer's
    /// programs come and go with the policies that want them.
    MapsOnly,
}

impl Installed {
    fn describe(self) -> String {
        match self {
            Self::Programs(outcome) => outcome.describe(),
            Self::MapsOnly => {
                "syscall layer only (no BPF LSM program): the maps are pinned under".to_owned()
            }
        }
    }

    /// True once new pins are complete enough to read their events.
    fn pins_ready(self, bpf: bpf::Bpf) -> bool {
        match self {
            Self::Programs(_) => bpf.programs_pinned(),
            Self::MapsOnly => bpf.maps_pinned(),
        }
    }
}

/// How the daemon runs, beyond the pins.
pub struct Settings {
    pub installed: Installed,
    /// Serve metrics, `/healthz` and `/readyz` here.
    pub metrics: Option<SocketAddr>,
    /// The Kubernetes node agent's names of the cgroups, for events and metrics.
    pub names: Option<Names>,
    /// Set by the Kubernetes node agent once it has synced: `/readyz` waits for it.
    pub kubernetes_ready: Option<Arc<AtomicBool>>,
}

/// Runs the agent until SIGTERM or SIGINT: consumes the ring buffer, fans events out, serves the
/// control socket and, at `settings.metrics`, the Prometheus metrics and probes.
pub async fn serve(bpf: bpf::Bpf, settings: Settings) -> Result<()> {
    let Settings {
        installed,
        metrics: metrics_addr,
        names,
        kubernetes_ready,
    } = settings;
    let kubernetes = names.is_some();
    let metrics = Arc::new(Metrics::new(bpf, names.clone()));
    let health = Arc::new(Health::new(kubernetes_ready));
    let mut events_id = bpf.pinned_events_id();
    let mut build = bpf.pinned_build();
    let mut consumer =
        Some(Consumer::new(bpf.open_event_maps()?).context("cannot watch the ring buffer")?);
    let (frames, _) = broadcast::channel(READER_QUEUE);
    let scrapes = match metrics_addr {
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
    let mut sink = Fanout::new(frames.clone(), Arc::clone(&metrics), names);
    health.set_consuming(consumer.is_some());
    // Each reader task holds a sender; `recv` answers `None` once every one has finished.
    let (reader_alive, mut readers_finished) = mpsc::channel::<()>(1);
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut pin_check = tokio::time::interval(PIN_CHECK_INTERVAL);

    let metrics_note = match &scrapes {
        Some(listener) => format!(
            "; metrics on http://{}/metrics (probes: /healthz, /readyz)",
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
                    tokio::spawn(fanout::serve_reader(
                        stream,
                        frames.subscribe(),
                        Arc::clone(&metrics),
                        kubernetes,
                        reader_alive.clone(),
                    ));
                }
                Err(err) => eprintln!("enforcer: cannot accept a reader on {EVENT_SOCKET}: {err}"),
            },
            Some(record) = records.recv() => sink.state(&record),
            accepted = http::accept_scrape(scrapes.as_ref()) => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(http::serve_scrape(
                        stream,
                        Arc::clone(&metrics),
                        Arc::clone(&health),
                    ));
                }
                Err(err) => eprintln!("enforcer: cannot accept a metrics client: {err}"),
            },
            _ = pin_check.tick() => {
                follow_pins(bpf, installed, &mut consumer, &mut events_id, &mut sink)?;
                health.set_consuming(consumer.is_some());
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
    super::create_run_dir()?;
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

/// The next drain, or never while no ring buffer is pinned.
async fn next_events(consumer: Option<&mut Consumer>, sink: &mut Fanout) -> io::Result<()> {
    match consumer {
        Some(consumer) => consumer.next(sink).await,
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
    installed: Installed,
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
        Some(_) if !installed.pins_ready(bpf) => return Ok(()),
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
