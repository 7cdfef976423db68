//! Wall-clock time for the kernel's `CLOCK_MONOTONIC` timestamps (`bpf_ktime_get_ns`).
//!
//! The offset between the two clocks changes whenever the wall clock is stepped (NTP, an
//! operator, `settimeofday`), so a long-running reader recomputes it, at most once per
//! [`REFRESH`]: two clock reads, cheap next to rendering an event.
use std::time::{Duration, Instant, SystemTime};

/// How long an offset is used before it is computed again.
const REFRESH: Duration = Duration::from_secs(1);

pub struct Clock {
    offset: Offset,
    computed: Instant,
}

/// Wall time minus monotonic time, which is negative when the wall clock is set before boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Offset {
    Ahead(Duration),
    Behind(Duration),
}

impl Offset {
    fn now() -> Self {
        let monotonic = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(Duration::from)
            .unwrap_or_default();
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        match wall.checked_sub(monotonic) {
            Some(offset) => Self::Ahead(offset),
            None => Self::Behind(monotonic - wall),
        }
    }

    fn wall(self, ktime_ns: u64) -> SystemTime {
        let since_boot = Duration::from_nanos(ktime_ns);
        let since_epoch = match self {
            Self::Ahead(offset) => since_boot + offset,
            Self::Behind(offset) => since_boot.saturating_sub(offset),
        };
        SystemTime::UNIX_EPOCH + since_epoch
    }
}

impl Clock {
    pub fn new() -> Self {
        Self {
            offset: Offset::now(),
            computed: Instant::now(),
        }
    }

    /// The wall-clock time of a kernel timestamp, by the wall clock as it is set now (to within
    /// [`REFRESH`]).
    pub fn wall(&mut self, ktime_ns: u64) -> SystemTime {
        if self.computed.elapsed() >= REFRESH {
            self.offset = Offset::now();
            self.computed = Instant::now();
        }
        self.offset.wall(ktime_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_either_way_convert() {
        let second = Duration::from_secs(1);
        assert_eq!(
            Offset::Ahead(second).wall(1_000_000_000),
            SystemTime::UNIX_EPOCH + 2 * second
        );
        assert_eq!(
            Offset::Behind(second).wall(3_000_000_000),
            SystemTime::UNIX_EPOCH + 2 * second
        );
        assert_eq!(Offset::Behind(second).wall(0), SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn a_stale_offset_is_recomputed() {
        let mut clock = Clock::new();
        // As if the wall clock had been stepped far back since the offset was computed.
        clock.offset = Offset::Behind(Duration::from_secs(86_400 * 365 * 100));
        clock.computed = Instant::now() - REFRESH;
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(Duration::from)
            .unwrap();
        let shown = clock.wall(now.as_nanos() as u64);
        let error = SystemTime::now()
            .duration_since(shown)
            .unwrap_or_else(|err| err.duration());
        assert!(error < Duration::from_secs(1), "{error:?}");
    }
}
