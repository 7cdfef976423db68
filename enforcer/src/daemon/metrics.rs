//! The daemon's Prometheus metrics (text exposition format 0.0.4).
//!
//! Decision counts come from the kernel's per-CPU counters map, read at scrape time, so they are
//! exact whatever happened to events; the event counters are the daemon's own.
use std::sync::{
    Mutex,
    atomic::{AtomicI64, AtomicU64},
};

use enforcer_common::{Action, Counters, OPERATIONS};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        gauge::{ConstGauge, Gauge},
    },
    registry::Registry,
};

use crate::{bpf, cgroup::PathCache};

/// The metric names below get this prefix, and counters a `_total` suffix.
const PREFIX: &str = "enforcer";
/// The actions a decision is counted under.
const COUNTED: [Action; 3] = [Action::Audit, Action::Deny, Action::Kill];

/// The daemon's metrics; the counters are updated by the consumer and the event stream.
pub struct Metrics {
    registry: Registry,
    /// Events read from the ring buffer (each is written to stdout and offered to every reader).
    pub delivered: Counter<u64, AtomicU64>,
    /// Events the kernel dropped because the ring buffer was full.
    pub dropped: Counter<u64, AtomicU64>,
    /// Events a reader of the event stream missed because it read too slowly (per reader).
    pub reader_dropped: Counter<u64, AtomicU64>,
    /// Readers connected to the event stream.
    pub readers: Gauge<i64, AtomicI64>,
}

impl Metrics {
    pub fn new(bpf: bpf::Bpf) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let delivered = Counter::default();
        let dropped = Counter::default();
        let reader_dropped = Counter::default();
        let readers = Gauge::default();
        registry.register(
            "events_delivered",
            "Events the daemon read from the ring buffer and passed on (stdout and every reader)",
            delivered.clone(),
        );
        registry.register(
            "events_dropped",
            "Events lost in the kernel because the ring buffer was full (their decisions stood and were counted)",
            dropped.clone(),
        );
        registry.register(
            "reader_events_dropped",
            "Events a reader of the event stream (enforcer tail) missed because it read too slowly; it reported them",
            reader_dropped.clone(),
        );
        registry.register(
            "readers",
            "Readers connected to the event stream",
            readers.clone(),
        );
        registry.register_collector(Box::new(KernelState {
            bpf,
            paths: Mutex::default(),
        }));
        Self {
            registry,
            delivered,
            dropped,
            reader_dropped,
            readers,
        }
    }

    /// The exposition of every metric, reading the kernel's maps now.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(err) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            eprintln!("enforcer: cannot encode the metrics: {err}");
        }
        text
    }
}

/// Reads the pinned maps at each scrape: decision counters, policies, attached programs.
#[derive(Debug)]
struct KernelState {
    bpf: bpf::Bpf,
    paths: Mutex<CachedPaths>,
}

#[derive(Default)]
struct CachedPaths(PathCache);

impl std::fmt::Debug for CachedPaths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PathCache")
    }
}

/// One policy cgroup and its counters summed over CPUs.
struct Row {
    id: u64,
    path: String,
    totals: Counters,
}

impl KernelState {
    fn rows(&self) -> Vec<Row> {
        let maps = match self.bpf.open_policy_maps() {
            Ok(maps) => maps,
            Err(bpf::LoaderError::NotInstalled(_)) => return Vec::new(),
            Err(err) => {
                eprintln!(
                    "enforcer: metrics: cannot open the policy maps: {}",
                    err.with_causes()
                );
                return Vec::new();
            }
        };
        let policies = match maps.policies() {
            Ok(policies) => policies,
            Err(err) => {
                eprintln!("enforcer: metrics: {err}");
                return Vec::new();
            }
        };
        let mut paths = self
            .paths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut rows: Vec<Row> = policies
            .into_iter()
            .map(|(id, _)| {
                let mut totals = Counters::default();
                if let Ok(per_cpu) = maps.counters.get(&id, 0) {
                    for cpu in per_cpu.iter() {
                        totals.add(cpu);
                    }
                }
                Row {
                    id,
                    path: paths.0.path(id),
                    totals,
                }
            })
            .collect();
        rows.sort_by_key(|row| row.id);
        rows
    }
}

impl Collector for KernelState {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rows = self.rows();
        {
            let mut family = encoder.encode_descriptor(
                "decisions",
                "Decisions taken by policies, per policy cgroup, operation and action (exact: read from the kernel's counters).",
                None,
                MetricType::Counter,
            )?;
            for row in &rows {
                for spec in OPERATIONS {
                    for action in COUNTED {
                        let labels = [
                            ("cgroup_id", row.id.to_string()),
                            ("cgroup_path", row.path.clone()),
                            ("operation", spec.name.to_owned()),
                            ("action", action.name().to_owned()),
                        ];
                        ConstCounter::new(row.totals.get(action, spec.op))
                            .encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        for (name, help, value) in [
            (
                "tamper_refused",
                "Tamper attempts refused, per policy cgroup (exact).",
                Counters::tamper as fn(&Counters) -> u64,
            ),
            (
                "events_suppressed",
                "Events the policy's event budget suppressed, per policy cgroup (exact; their decisions are counted in decisions).",
                Counters::suppressed,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for row in &rows {
                let labels = [
                    ("cgroup_id", row.id.to_string()),
                    ("cgroup_path", row.path.clone()),
                ];
                ConstCounter::new(value(&row.totals)).encode(family.encode_family(&labels)?)?;
            }
        }
        ConstGauge::new(rows.len() as i64).encode(encoder.encode_descriptor(
            "policies",
            "Cgroups with a policy.",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(self.bpf.attached_links() as i64).encode(encoder.encode_descriptor(
            "programs_attached",
            "BPF LSM programs attached (their link pins are present).",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}
