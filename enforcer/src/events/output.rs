//! Events on stdout: aligned text lines for people (`enforcer tail`) or JSON lines for machines
//! (`tail --json`, the daemon's stdout).
use std::{
    io::{self, IsTerminal, Write},
    os::fd::AsFd,
    time::SystemTime,
};

use super::{Clock, FollowError, Record, Rendered, Sink, json, text};
use crate::{cgroup::PathCache, kubernetes::names::PodRef};

pub struct Output {
    json: bool,
    colour: bool,
    clock: Clock,
    paths: PathCache,
    out: io::BufWriter<io::Stdout>,
    /// The header is printed.
    started: bool,
}

impl Output {
    /// Text (coloured when stdout is a terminal and `NO_COLOR` is unset) or JSON lines.
    pub fn new(json: bool) -> Self {
        let stdout = io::stdout();
        Self {
            json,
            colour: !json && stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none(),
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
    pub fn start(&mut self) -> io::Result<()> {
        if !self.json && !self.started {
            text::line(&mut self.out, &text::HEADER.map(str::to_owned), None)?;
        }
        self.started = true;
        Ok(())
    }

    pub fn event(&mut self, record: &Record) -> io::Result<()> {
        self.render(record, None)
    }

    /// An event with the Kubernetes names of its cgroup: JSON carries them; text shows the pod
    /// and container in place of the cgroup path, which is less telling.
    pub fn named_event(&mut self, record: &Record, names: &PodRef) -> io::Result<()> {
        self.render(record, Some(names))
    }

    fn render(&mut self, record: &Record, names: Option<&PodRef>) -> io::Result<()> {
        let mut rendered = Rendered::new(*record, &mut self.clock, &mut self.paths);
        rendered.kubernetes = names.cloned();
        if self.json {
            writeln!(self.out, "{}", rendered.json())
        } else {
            let style = self.colour.then(|| text::style(record.action));
            text::line(&mut self.out, &rendered.columns(), style)
        }
    }

    /// `count` events were lost in the kernel: the ring buffer was full.
    pub fn dropped(&mut self, count: u64) -> io::Result<()> {
        self.drop_report(count, "the ring buffer was full")
    }

    /// `count` events never reached this reader: it read the daemon's stream too slowly.
    pub fn lagged(&mut self, count: u64) -> io::Result<()> {
        self.drop_report(count, "this tail fell behind the daemon")
    }

    fn drop_report(&mut self, count: u64, why: &str) -> io::Result<()> {
        if self.json {
            writeln!(self.out, "{}", json::drop_record(count, SystemTime::now()))
        } else {
            writeln!(self.out, "-- {count} events dropped: {why} --")
        }
    }
}

/// `enforcer tail`'s sink: a reader that went away (`tail | head -3`) ends the loop.
impl Sink for Output {
    type Error = FollowError;

    fn started(&mut self) -> Result<(), FollowError> {
        Ok(self.start()?)
    }

    fn event(&mut self, record: &Record) -> Result<(), FollowError> {
        Ok(Output::event(self, record)?)
    }

    fn named_event(&mut self, record: &Record, names: &PodRef) -> Result<(), FollowError> {
        Ok(Output::named_event(self, record, names)?)
    }

    fn dropped(&mut self, count: u64) -> Result<(), FollowError> {
        Ok(Output::dropped(self, count)?)
    }

    fn lagged(&mut self, count: u64) -> Result<(), FollowError> {
        Ok(Output::lagged(self, count)?)
    }

    fn drained(&mut self, tick: bool) -> Result<(), FollowError> {
        self.flush()?;
        if tick && stdout_closed() {
            return Err(FollowError::ReaderGone);
        }
        Ok(())
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
