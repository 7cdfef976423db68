//! `enforcer tail`: a live view of violation events.
//!
//! The BPF programs submit events without waking the reader (a deny storm must not pay for a
//! wakeup per call), so the ring buffer is drained on a short timer as well as on readiness.
use std::{
    io::{self, IsTerminal, Write},
    os::fd::AsFd,
    time::Duration,
};

use anstyle::{AnsiColor, Style};
use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use enforcer_common::Action;
use tokio::io::unix::AsyncFd;

use crate::{
    cgroup::{self, PathCache, Workload},
    events::{self, Clock, Rendered},
    loader,
};

const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

#[derive(clap::Args)]
pub struct Args {
    /// Only events from this cgroup and its descendants.
    #[arg(long, value_name = "PATH|ID")]
    pub cgroup: Option<String>,
    /// One JSON object per line (schema in the README).
    #[arg(long)]
    pub json: bool,
}

struct Output {
    json: bool,
    colour: bool,
    filter: Option<String>,
    clock: Clock,
    paths: PathCache,
    out: io::BufWriter<io::Stdout>,
}

/// Ends the loop quietly: the reader went away (`tail | head -3`).
struct ReaderGone;

pub fn run(args: Args) -> Result<()> {
    let filter = args
        .cgroup
        .as_deref()
        .map(cgroup::resolve)
        .transpose()?
        .map(|cgroup| cgroup.path);
    let maps = loader::open_event_maps()?;
    let stdout = io::stdout();
    let mut output = Output {
        json: args.json,
        colour: !args.json && stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        filter,
        clock: Clock::new(),
        paths: PathCache::default(),
        out: io::BufWriter::new(stdout),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match runtime.block_on(follow(maps.events, maps.dropped, &mut output)) {
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

async fn follow(
    events: RingBuf<MapData>,
    dropped: PerCpuArray<MapData, u64>,
    output: &mut Output,
) -> Result<(), Follow> {
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, until it is dropped, which
    // happens only when the AsyncFd that owns it is dropped.
    let mut ring =
        unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }.map_err(
            |err| Follow::Failed(anyhow::anyhow!("cannot watch the ring buffer: {err}")),
        )?;
    let mut ticker = tokio::time::interval(DRAIN_INTERVAL);
    let mut reported_drops = total_dropped(&dropped);
    if !output.json {
        output.header()?;
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), output)?;
                guard.clear_ready();
            }
            _ = ticker.tick() => {
                drain(ring.get_mut(), output)?;
                let now = total_dropped(&dropped);
                if now > reported_drops {
                    output.dropped(now - reported_drops)?;
                    reported_drops = now;
                }
                output.out.flush()?;
                if stdout_closed() {
                    return Err(Follow::Gone(ReaderGone));
                }
            }
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, output: &mut Output) -> io::Result<()> {
    while let Some(item) = ring.next() {
        match events::decode(&item) {
            Ok(event) => output.event(event)?,
            Err(err) => eprintln!("enforcer: skipped an event: {err}"),
        }
    }
    output.out.flush()
}

fn total_dropped(dropped: &PerCpuArray<MapData, u64>) -> u64 {
    dropped
        .get(&0, 0)
        .map(|per_cpu| per_cpu.iter().sum())
        .unwrap_or(0)
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
const WIDTHS: [usize; 6] = [24, 36, 7, 15, 8, 6];
/// The column of the cgroup path or the workload in it.
const CONTAINER: usize = 1;

impl Output {
    fn header(&mut self) -> io::Result<()> {
        let names = ["TIME", "CONTAINER", "PID", "COMM", "OP", "ACTION", "DETAIL"];
        self.line(names.map(str::to_owned), None)
    }

    fn event(&mut self, event: enforcer_common::Event) -> io::Result<()> {
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

    fn dropped(&mut self, count: u64) -> io::Result<()> {
        if self.json {
            let record = serde_json::json!({
                "event": { "kind": "metric", "action": "events-dropped" },
                "enforcer": { "dropped": count },
            });
            writeln!(self.out, "{record}")
        } else {
            writeln!(
                self.out,
                "-- {count} events dropped: the ring buffer was full --"
            )
        }
    }

    fn line(&mut self, columns: [String; 7], action_style: Option<Style>) -> io::Result<()> {
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
    use super::{CONTAINER, WIDTHS, add_workload, container_column, in_subtree};
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
    fn subtree_filter_matches_descendants_only() {
        assert!(in_subtree("/pod", "/pod"));
        assert!(in_subtree("/pod/ctr", "/pod"));
        assert!(!in_subtree("/pod2", "/pod"));
        assert!(in_subtree("/anything", "/"));
    }
}
