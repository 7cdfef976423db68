//! The ring-buffer consumer shared by `enforcer tail` and `enforcer record` (when no daemon runs)
//! and `enforcer daemon`.
//!
//! The BPF programs submit events without waking the reader (`BPF_RB_NO_WAKEUP`: a deny storm must
//! not pay for a wakeup per call), so the ring buffer is drained on a short timer as well as on
//! readiness. Events the kernel could not submit (ring buffer full) are counted in a per-CPU array;
//! its growth since the last report is handed on as a drop report on every tick, never hidden.
use std::{io, time::Duration};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use super::Sink;
use crate::bpf::EventMaps;

/// How often the ring buffer is drained (and drops are read) without a wakeup.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// Records handed on per drain before the consumer yields to the rest of its runtime, so that a
/// deny storm that refills the ring buffer as fast as it is read cannot starve signal handling,
/// readers or the control socket. What is left is read on the next turn.
const DRAIN_BATCH: usize = 4096;

/// The single reader of the pinned ring buffer.
pub struct Consumer {
    ring: AsyncFd<RingBuf<MapData>>,
    dropped: PerCpuArray<MapData, u64>,
    /// The drop counter's total when last reported: drops from before this consumer started are
    /// not this consumer's to report.
    reported_drops: u64,
    ticker: tokio::time::Interval,
}

impl Consumer {
    /// Starts consuming; must run inside a tokio runtime.
    pub fn new(maps: EventMaps) -> io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, until it is dropped,
        // which happens only when the AsyncFd that owns it is dropped.
        let ring = unsafe { AsyncFd::register_with_interest(maps.events, Interest::READABLE) }?;
        let reported_drops = total_dropped(&maps.dropped);
        let mut ticker = tokio::time::interval(DRAIN_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Self {
            ring,
            dropped: maps.dropped,
            reported_drops,
            ticker,
        })
    }

    /// Waits until the ring buffer is readable or the drain timer fires, then hands `sink` every
    /// record waiting (and, on a tick, the drops since the last report). Cancel-safe: nothing is
    /// read before the wait ends.
    pub async fn next<S: Sink>(&mut self, sink: &mut S) -> Result<(), S::Error> {
        let more = tokio::select! {
            guard = self.ring.readable_mut() => {
                let mut guard = guard?;
                let more = drain(guard.get_inner_mut(), sink)?;
                // Edge-triggered: readiness is cleared only once the buffer is empty.
                if !more {
                    guard.clear_ready();
                }
                sink.drained(false)?;
                more
            }
            _ = self.ticker.tick() => self.drain_now(sink)?,
        };
        if more {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Hands `sink` up to a batch of the records waiting now and the drops since the last report
    /// (also used for a last drain before shutting down). True when records are left.
    pub fn drain_now<S: Sink>(&mut self, sink: &mut S) -> Result<bool, S::Error> {
        let more = drain(self.ring.get_mut(), sink)?;
        let now = total_dropped(&self.dropped);
        if now > self.reported_drops {
            sink.dropped(now - self.reported_drops)?;
            self.reported_drops = now;
        }
        sink.drained(true)?;
        Ok(more)
    }
}

/// Hands on at most [`DRAIN_BATCH`] records; true when the batch filled (records may be left).
fn drain<S: Sink>(ring: &mut RingBuf<MapData>, sink: &mut S) -> Result<bool, S::Error> {
    for _ in 0..DRAIN_BATCH {
        let Some(item) = ring.next() else {
            return Ok(false);
        };
        match super::decode(&item) {
            Ok(record) => sink.event(&record)?,
            Err(err) => eprintln!("enforcer: skipped an event: {err}"),
        }
    }
    Ok(true)
}

fn total_dropped(dropped: &PerCpuArray<MapData, u64>) -> u64 {
    dropped
        .get(&0, 0)
        .map(|per_cpu| per_cpu.iter().sum())
        .unwrap_or(0)
}
