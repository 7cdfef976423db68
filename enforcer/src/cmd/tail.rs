//! `enforcer tail`: a live view of violation events.
//!
//! When `enforcer daemon` runs, its event stream is read (any number of tails see every event);
//! otherwise the pinned ring buffer is consumed directly, with the same drain logic as the daemon
//! ([`crate::consumer`]). Either way each event is rendered here, the same way.
use std::{
    io::{self, IsTerminal, Write},
    os::fd::AsFd,
    path::Path,
    time::{Duration, SystemTime},
};

use anstyle::{AnsiColor, Style};
use anyhow::{Context, Result};
use bytes::BytesMut;
use enforcer_common::{Action, Event};
use tokio::{io::AsyncReadExt, net::UnixStream};

use crate::{
    bpf,
    cgroup::{self, PathCache, Workload},
    consumer::{self, Consumer},
    daemon::{self, Frame},
    events::{Clock, Rendered},
};

#[derive(clap::Args)]
pub struct Args {
    /// Only events from this cgroup and its descendants.
    #[arg(long, value_name = "PATH|ID")]
    pub cgroup: Option<String>,
    /// One JSON object per line (schema in the README).
    #[arg(long)]
    pub json: bool,
}

/// Renders events to stdout: aligned text lines or JSON lines (also the daemon's stdout).
pub struct Output {
    json: bool,
    colour: bool,
    filter: Option<String>,
    clock: Clock,
    paths: PathCache,
    out: io::BufWriter<io::Stdout>,
    /// The header is printed.
    started: bool,
}

/// How often a tail reading the ring buffer itself looks for a daemon that started since.
const DAEMON_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Ends the loop quietly: the reader went away (`tail | head -3`).
struct ReaderGone;

pub fn run(args: Args, bpf: bpf::Bpf) -> Result<()> {
    let filter = args
        .cgroup
        .as_deref()
        .map(cgroup::resolve)
        .transpose()?
        .map(|cgroup| cgroup.path);
    let mut output = Output::new(args.json, filter);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let followed = runtime.block_on(async {
        let stream = match daemon::connect().await.map_err(Follow::Failed)? {
            Some(stream) => stream,
            None => {
                let maps = bpf
                    .open_event_maps()
                    .map_err(|err| Follow::Failed(err.into()))?;
                output.start()?;
                match follow_ring(maps, &mut output).await? {
                    Some(stream) => stream,
                    None => return Ok(()),
                }
            }
        };
        output.start()?;
        follow_daemon(stream, &mut output).await
    });
    match followed {
        Ok(()) | Err(Follow::Gone(ReaderGone)) => Ok(()),
        Err(Follow::Failed(err)) => Err(err),
    }
}

enum Follow {
    Gone(ReaderGone),
    Failed(anyhow::Error),
}

impl From<io::Error> for Follow {
    fn from(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::BrokenPipe {
            Self::Gone(ReaderGone)
        } else {
            Self::Failed(err.into())
        }
    }
}

/// Consumes the pinned ring buffer while no daemon runs. A daemon started meanwhile becomes the
/// ring buffer's consumer: the tail then hands over to its event stream (returned) rather than
/// split the events with it.
async fn follow_ring(
    maps: bpf::EventMaps,
    output: &mut Output,
) -> Result<Option<UnixStream>, Follow> {
    let mut consumer = Consumer::new(maps)
        .map_err(|err| Follow::Failed(anyhow::anyhow!("cannot watch the ring buffer: {err}")))?;
    let mut sink = Direct(output);
    let mut daemon_check = tokio::time::interval(DAEMON_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(None),
            drained = consumer.next(&mut sink) => drained?,
            _ = daemon_check.tick() => {
                if Path::new(crate::paths::EVENT_SOCKET).exists()
                    && let Ok(Some(stream)) = daemon::connect().await
                {
                    while consumer.drain_now(&mut sink)? {}
                    eprintln!(
                        "enforcer: an enforcer daemon started: reading its event stream from now on (events it read before this tail connected are not shown here)"
                    );
                    return Ok(Some(stream));
                }
            }
        }
    }
}

/// The tail's own consumer hands events straight to its output.
struct Direct<'a>(&'a mut Output);

impl consumer::Sink for Direct<'_> {
    type Error = Follow;

    fn event(&mut self, event: &Event) -> Result<(), Follow> {
        Ok(self.0.event(*event)?)
    }

    fn dropped(&mut self, count: u64) -> Result<(), Follow> {
        Ok(self.0.dropped(count)?)
    }

    fn drained(&mut self, tick: bool) -> Result<(), Follow> {
        self.0.flush()?;
        if tick && stdout_closed() {
            return Err(Follow::Gone(ReaderGone));
        }
        Ok(())
    }
}

/// Reads the daemon's event stream (past its greeting) until the daemon goes away, which ends the
/// tail with an error of its own: a person watching must notice that the stream stopped.
async fn follow_daemon(mut stream: UnixStream, output: &mut Output) -> Result<(), Follow> {
    let mut ticker = tokio::time::interval(consumer::DRAIN_INTERVAL);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        buf.reserve(64 * 1024);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            // read_buf is cancel-safe: a partial frame stays in `buf`.
            read = stream.read_buf(&mut buf) => {
                let gone = match read {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(err) if matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) => true,
                    Err(err) => {
                        return Err(Follow::Failed(
                            anyhow::Error::new(err).context(format!("cannot read {}", crate::paths::EVENT_SOCKET)),
                        ));
                    }
                };
                while let Some(frame) = Frame::decode(&mut buf)
                    .map_err(|err| Follow::Failed(err.into()))?
                {
                    match frame {
                        Frame::Event(event) => output.event(event)?,
                        Frame::Dropped(count) => output.dropped(count)?,
                        Frame::Lagged(count) => output.lagged(count)?,
                    }
                }
                output.flush()?;
                if gone {
                    return Err(Follow::Failed(
                        crate::error::ExitError::daemon_gone(format!(
                            "the daemon went away (its event stream {} closed); enforcement continues; run `enforcer tail` again to keep reading events",
                            crate::paths::EVENT_SOCKET
                        ))
                        .into(),
                    ));
                }
            }
            _ = ticker.tick() => {
                output.flush()?;
                if stdout_closed() {
                    return Err(Follow::Gone(ReaderGone));
                }
            }
        }
    }
}

/// A pipe whose reader has gone reports POLLERR on the write end, so `tail | head -3` ends at
/// once even when no further event would make a write fail.
fn stdout_closed() -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stdout = io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

/// Column widths, but the last (DETAIL), which takes the rest of the line. The container column
/// fits `containerd:<12 hex> pod:<8 hex>`.
const WIDTHS: [usize; 7] = [24, 36, 7, 15, 8, 6, 10];
/// The column of the cgroup path or the workload in it.
const CONTAINER: usize = 1;

impl Output {
    /// Text (coloured when stdout is a terminal and `NO_COLOR` is unset) or JSON lines, keeping
    /// only events from the cgroup subtree at `filter` when given.
    pub fn new(json: bool, filter: Option<String>) -> Self {
        let stdout = io::stdout();
        Self {
            json,
            colour: !json && stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            filter,
            clock: Clock::new(),
            paths: PathCache::default(),
            out: io::BufWriter::new(stdout),
            started: false,
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The column header of text output, once.
    fn start(&mut self) -> io::Result<()> {
        if !self.json && !self.started {
            self.header()?;
        }
        self.started = true;
        Ok(())
    }

    fn header(&mut self) -> io::Result<()> {
        let names = [
            "TIME",
            "CONTAINER",
            "PID",
            "COMM",
            "OP",
            "ACTION",
            "LAYER",
            "DETAIL",
        ];
        self.line(names.map(str::to_owned), None)
    }

    pub fn event(&mut self, event: Event) -> io::Result<()> {
        let rendered = Rendered::new(event, &self.clock, &mut self.paths);
        if let Some(filter) = &self.filter
            && !in_subtree(&rendered.cgroup_path, filter)
        {
            return Ok(());
        }
        let workload = cgroup::workload(&rendered.cgroup_path);
        if self.json {
            let mut record = rendered.json();
            if let Some(workload) = &workload {
                add_workload(&mut record, workload);
            }
            writeln!(self.out, "{record}")
        } else {
            let style = self.colour.then(|| style(rendered.action()));
            let mut columns = rendered.columns();
            columns[CONTAINER] =
                container_column(&rendered.cgroup_path, workload.as_ref(), WIDTHS[CONTAINER]);
            self.line(columns, style)
        }
    }

    /// `count` events were lost in the kernel: the ring buffer was full.
    pub fn dropped(&mut self, count: u64) -> io::Result<()> {
        self.drop_report(count, "the ring buffer was full")
    }

    /// `count` events never reached this tail: it read the daemon's stream too slowly.
    pub fn lagged(&mut self, count: u64) -> io::Result<()> {
        self.drop_report(count, "this tail fell behind the daemon")
    }

    fn drop_report(&mut self, count: u64, why: &str) -> io::Result<()> {
        if self.json {
            writeln!(self.out, "{}", drop_record(count, SystemTime::now()))
        } else {
            writeln!(self.out, "-- {count} events dropped: {why} --")
        }
    }

    fn line(&mut self, columns: [String; 8], action_style: Option<Style>) -> io::Result<()> {
        for (i, column) in columns.iter().enumerate() {
            match WIDTHS.get(i) {
                Some(&width) if i == 5 => match action_style {
                    Some(style) => write!(self.out, "{style}{column:<width$}{style:#} ")?,
                    None => write!(self.out, "{column:<width$} ")?,
                },
                Some(&width) => write!(self.out, "{column:<width$} ")?,
                None => write!(self.out, "{column}")?,
            }
        }
        writeln!(self.out)
    }
}

/// The JSON record of `count` lost events, noticed at `when`: stamped like the events, since log
/// pipelines (Elasticsearch data streams among them) refuse a record without `@timestamp`.
fn drop_record(count: u64, when: SystemTime) -> serde_json::Value {
    serde_json::json!({
        "@timestamp": humantime::format_rfc3339_nanos(when).to_string(),
        "event": { "kind": "metric", "action": "events-dropped" },
        "enforcer": { "dropped": count },
    })
}

fn style(action: Action) -> Style {
    let colour = match action {
        Action::Deny => AnsiColor::Red,
        Action::Kill => AnsiColor::Magenta,
        Action::Audit => AnsiColor::Yellow,
        Action::Allow => AnsiColor::Green,
    };
    Style::new().fg_color(Some(colour.into())).bold()
}

/// The container column: the workload's label when the path names a container or a pod (their
/// paths never fit), else the cgroup path; either is cut to `width` characters with an ellipsis,
/// a label at its end, a path at its start (so the deepest cgroup, usually a systemd unit, stays).
fn container_column(path: &str, workload: Option<&Workload>, width: usize) -> String {
    match workload {
        Some(workload) if workload.container.is_some() || workload.pod_uid.is_some() => {
            let label = workload.label();
            if label.chars().count() <= width {
                label
            } else {
                let kept: String = label.chars().take(width.saturating_sub(1)).collect();
                format!("{kept}…")
            }
        }
        _ => {
            let length = path.chars().count();
            if length <= width {
                path.to_owned()
            } else {
                let kept: String = path.chars().skip(length + 1 - width).collect();
                format!("…{kept}")
            }
        }
    }
}

/// Adds what the cgroup path says about the workload to a JSON record, under ECS names where ECS
/// has them: `container.id`, `container.runtime`, `kubernetes.pod.uid`. A runtime monitor
/// (`conmon`) is not in its container: it gets `enforcer.monitor_of` (and its runtime), not
/// `container.*`. A systemd unit goes under `enforcer.systemd_unit`.
fn add_workload(record: &mut serde_json::Value, workload: &Workload) {
    use serde_json::json;
    if let Some(container) = &workload.container {
        if container.monitor {
            record["enforcer"]["monitor_of"] = json!({
                "container_id": container.id,
                "runtime": container.runtime.name(),
            });
        } else {
            record["container"] = json!({
                "id": container.id,
                "runtime": container.runtime.name(),
            });
        }
    }
    if let Some(uid) = &workload.pod_uid {
        record["kubernetes"] = json!({ "pod": { "uid": uid } });
    }
    if let Some(unit) = &workload.unit {
        record["enforcer"]["systemd_unit"] = json!(unit);
    }
}

fn in_subtree(path: &str, root: &str) -> bool {
    root == "/"
        || path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{CONTAINER, WIDTHS, add_workload, container_column, drop_record, in_subtree};
    use crate::cgroup::workload;

    const ID: &str = "3f2a9c1b4d5e6f708192a3b4c5d6e7f80912a3b4c5d6e7f8091a2b3c4d5e6f70";
    const POD: &str = "/kubepods.slice/kubepods-besteffort.slice/\
                       kubepods-besteffort-pod1234abcd_5678_4ef0_9abc_def012345678.slice";

    fn column(path: &str) -> String {
        container_column(path, workload(path).as_ref(), WIDTHS[CONTAINER])
    }

    #[test]
    fn container_column_names_containers_and_pods() {
        let path = format!("{POD}/cri-containerd-{ID}.scope");
        assert_eq!(column(&path), "containerd:3f2a9c1b4d5e pod:1234abcd");
        assert_eq!(column(POD), "pod:1234abcd");
        assert_eq!(
            column(&format!("/system.slice/docker-{ID}.scope")),
            "docker:3f2a9c1b4d5e"
        );
    }

    #[test]
    fn container_column_keeps_the_end_of_long_paths() {
        assert_eq!(column("/demo"), "/demo");
        assert_eq!(
            column("/system.slice/nginx.service"),
            "/system.slice/nginx.service"
        );
        let long = "/user.slice/user-1000.slice/user@1000.service/app.slice/app-editor.scope";
        let shown = column(long);
        assert_eq!(shown.chars().count(), WIDTHS[CONTAINER]);
        assert_eq!(shown, "….service/app.slice/app-editor.scope");
        let unknown = "/a-very-long-cgroup-name/that-follows-no-runtime/naming-at-all";
        assert_eq!(column(unknown), "…at-follows-no-runtime/naming-at-all");
    }

    #[test]
    fn container_column_cuts_long_labels_at_the_end() {
        let path = format!("/system.slice/docker-{ID}.scope/system.slice/containerd.service");
        let shown = column(&path);
        assert_eq!(shown.chars().count(), WIDTHS[CONTAINER]);
        assert_eq!(shown, "docker:3f2a9c1b4d5e containerd.serv…");
    }

    #[test]
    fn json_gains_ecs_container_and_pod_fields() {
        let mut record =
            serde_json::json!({ "enforcer": { "action": "deny" }, "cgroup": { "id": 7 } });
        add_workload(
            &mut record,
            &workload(&format!("{POD}/cri-containerd-{ID}.scope")).unwrap(),
        );
        assert_eq!(record["container"]["id"], ID);
        assert_eq!(record["container"]["runtime"], "containerd");
        assert_eq!(
            record["kubernetes"]["pod"]["uid"],
            "1234abcd-5678-4ef0-9abc-def012345678"
        );
        assert_eq!(record["enforcer"]["action"], "deny");
        assert_eq!(record["cgroup"]["id"], 7);
        assert!(record["enforcer"].get("systemd_unit").is_none());
    }

    #[test]
    fn json_keeps_monitors_out_of_their_container() {
        let mut record = serde_json::json!({ "enforcer": {} });
        add_workload(
            &mut record,
            &workload(&format!("/machine.slice/libpod-conmon-{ID}.scope")).unwrap(),
        );
        assert!(record.get("container").is_none());
        assert_eq!(record["enforcer"]["monitor_of"]["container_id"], ID);
        assert_eq!(record["enforcer"]["monitor_of"]["runtime"], "podman");
    }

    #[test]
    fn json_names_systemd_units() {
        let mut record = serde_json::json!({ "enforcer": {} });
        add_workload(
            &mut record,
            &workload("/system.slice/nginx.service").unwrap(),
        );
        assert_eq!(record["enforcer"]["systemd_unit"], "nginx.service");
        assert!(record.get("container").is_none());
        assert!(record.get("kubernetes").is_none());
    }

    #[test]
    fn drop_records_carry_the_time_they_were_noticed() {
        let when = std::time::UNIX_EPOCH + Duration::from_nanos(1_767_225_600_123_456_789);
        let record = drop_record(41, when);
        // RFC 3339 in UTC with nanoseconds, as the events' `@timestamp`.
        assert_eq!(record["@timestamp"], "2026-01-01T00:00:00.123456789Z");
        assert_eq!(record["enforcer"]["dropped"], 41);
        assert_eq!(record["event"]["action"], "events-dropped");
    }

    #[test]
    fn subtree_filter_matches_descendants_only() {
        assert!(in_subtree("/pod", "/pod"));
        assert!(in_subtree("/pod/ctr", "/pod"));
        assert!(!in_subtree("/pod2", "/pod"));
        assert!(in_subtree("/anything", "/"));
    }
}
