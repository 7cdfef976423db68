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
    cgroup::{self, PathCache},
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

const WIDTHS: [usize; 6] = [24, 24, 7, 15, 8, 6];

impl Output {
    fn header(&mut self) -> io::Result<()> {
        let names = ["TIME", "CGROUP", "PID", "COMM", "OP", "ACTION", "DETAIL"];
        self.line(names.map(str::to_owned), None)
    }

    fn event(&mut self, event: enforcer_common::Event) -> io::Result<()> {
        let rendered = Rendered::new(event, &self.clock, &mut self.paths);
        if let Some(filter) = &self.filter
            && !in_subtree(&rendered.cgroup_path, filter)
        {
            return Ok(());
        }
        if self.json {
            writeln!(self.out, "{}", rendered.json())
        } else {
            let style = self.colour.then(|| style(rendered.action()));
            self.line(rendered.columns(), style)
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

fn in_subtree(path: &str, root: &str) -> bool {
    root == "/"
        || path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::in_subtree;

    #[test]
    fn subtree_filter_matches_descendants_only() {
        assert!(in_subtree("/pod", "/pod"));
        assert!(in_subtree("/pod/ctr", "/pod"));
        assert!(!in_subtree("/pod2", "/pod"));
        assert!(in_subtree("/anything", "/"));
    }
}
