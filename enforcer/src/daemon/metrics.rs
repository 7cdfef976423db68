//! The daemon's Prometheus metrics (text exposition format 0.0.4).
//!
//! Decision counts come from the kernel's per-CPU counters map, read at scrape time, so they are
//! exact whatever happened to events; the event counters are the daemon's own. With the
//! Kubernetes node agent's names, the per-policy counters also carry `namespace`, `pod` and
//! `container` labels, the pod label dropped past [`MAX_LABELLED_PODS`] pods.
use std::{
    collections::HashSet,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
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

use crate::{
    bpf,
    cgroup::PathCache,
    cmd::meta::COMMIT,
    kubernetes::names::{Names, PodRef},
};

/// The metric names below get this prefix, and counters a `_total` suffix.
const PREFIX: &str = "enforcer";
/// The actions a decision is counted under.
const COUNTED: [Action; 3] = [Action::Audit, Action::Deny, Action::Kill];
/// Pods a scrape names in its `pod` labels at most: past it every series goes without one, so a
/// large node's churn cannot grow Prometheus without bound (`pod_labels_dropped` says so).
pub const MAX_LABELLED_PODS: usize = 1000;

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
    /// `names`: the Kubernetes node agent's names of the cgroups, for the per-policy labels.
    pub fn new(bpf: bpf::Bpf, names: Option<Names>) -> Self {
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
            names,
            pods_dropped: AtomicBool::new(false),
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
    names: Option<Names>,
    /// The last scrape dropped the pod label (logged when it starts and when it stops).
    pods_dropped: AtomicBool,
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
    names: Option<PodRef>,
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
                    names: self.names.as_ref().and_then(|names| names.of_event(id, id)),
                }
            })
            .collect();
        rows.sort_by_key(|row| row.id);
        rows
    }
}

impl KernelState {
    /// True when `rows` name more pods than [`MAX_LABELLED_PODS`]; logs when that changes.
    fn drop_pod_labels(&self, rows: &[Row]) -> bool {
        let pods: HashSet<(&str, &str)> = rows
            .iter()
            .filter_map(|row| row.names.as_ref())
            .map(|names| (names.namespace.as_str(), names.pod.as_str()))
            .collect();
        let drop = pods.len() > MAX_LABELLED_PODS;
        if self.pods_dropped.swap(drop, Ordering::Relaxed) != drop {
            if drop {
                eprintln!(
                    "enforcer: metrics: {} pods have policies, more than {MAX_LABELLED_PODS}: the per-policy series go without their pod label (namespace and container stay)",
                    pods.len()
                );
            } else {
                eprintln!("enforcer: metrics: the per-policy series carry their pod label again");
            }
        }
        drop
    }

    /// The labels of one policy cgroup's series: its id and path and, when the daemon has the
    /// node agent's names, its namespace, pod and container (empty where unknown or dropped).
    fn labels(&self, row: &Row, drop_pods: bool) -> Vec<(&'static str, String)> {
        let mut labels = vec![
            ("cgroup_id", row.id.to_string()),
            ("cgroup_path", row.path.clone()),
        ];
        if self.names.is_some() {
            let names = row.names.clone().unwrap_or_default();
            labels.push(("namespace", names.namespace));
            labels.push(("pod", if drop_pods { String::new() } else { names.pod }));
            labels.push(("container", names.container.unwrap_or_default()));
        }
        labels
    }
}

impl Collector for KernelState {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rows = self.rows();
        let drop_pods = self.drop_pod_labels(&rows);
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
                        let mut labels = self.labels(row, drop_pods);
                        labels.push(("operation", spec.name.to_owned()));
                        labels.push(("action", action.name().to_owned()));
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
                let labels = self.labels(row, drop_pods);
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
        if self.names.is_some() {
            ConstGauge::new(i64::from(drop_pods)).encode(encoder.encode_descriptor(
                "pod_labels_dropped",
                "1 while more pods have policies than the per-policy series may name: they go without their pod label.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        let build = [
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("commit", COMMIT.to_owned()),
            ("bpf_build", format!("{:016x}", self.bpf.build())),
        ];
        let mut family = encoder.encode_descriptor(
            "build_info",
            "The daemon's version, git commit and BPF object build (always 1).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1).encode(family.encode_family(&build)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(names: Option<Names>) -> KernelState {
        KernelState {
            bpf: bpf::Bpf::shipped(),
            paths: Mutex::default(),
            names,
            pods_dropped: AtomicBool::new(false),
        }
    }

    fn row(id: u64, names: Option<PodRef>) -> Row {
        Row {
            id,
            path: format!("/pod{id}"),
            totals: Counters::default(),
            names,
        }
    }

    fn pod(n: usize) -> PodRef {
        PodRef {
            namespace: "shop".into(),
            pod: format!("web-{n}"),
            pod_uid: format!("uid-{n}"),
            container: Some("nginx".into()),
            policies: vec!["shop/no-mount".into()],
        }
    }

    #[test]
    fn per_policy_labels_name_the_pod_when_the_agent_does() {
        let without = state(None);
        let labels = without.labels(&row(5, None), false);
        assert_eq!(
            labels,
            [("cgroup_id", "5".into()), ("cgroup_path", "/pod5".into())]
        );

        let with = state(Some(Names::default()));
        let labels = with.labels(&row(5, Some(pod(1))), false);
        assert_eq!(
            labels[2..],
            [
                ("namespace", "shop".into()),
                ("pod", "web-1".into()),
                ("container", "nginx".into())
            ]
        );
        // A cgroup the agent does not know gets empty names (no label, to Prometheus).
        let labels = with.labels(&row(6, None), false);
        assert_eq!(labels[3], ("pod", String::new()));
        let labels = with.labels(&row(5, Some(pod(1))), true);
        assert_eq!(labels[3], ("pod", String::new()));
        assert_eq!(labels[2], ("namespace", "shop".into()));
    }

    #[test]
    fn the_pod_label_goes_past_the_limit_and_comes_back() {
        let state = state(Some(Names::default()));
        let mut rows: Vec<Row> = (0..MAX_LABELLED_PODS)
            .map(|n| row(n as u64, Some(pod(n))))
            .collect();
        assert!(!state.drop_pod_labels(&rows));
        // Two cgroups of one pod count once.
        rows.push(row(1_000_000, Some(pod(0))));
        assert!(!state.drop_pod_labels(&rows));
        rows.push(row(1_000_001, Some(pod(MAX_LABELLED_PODS))));
        assert!(state.drop_pod_labels(&rows));
        rows.pop();
        assert!(!state.drop_pod_labels(&rows));
    }

    #[test]
    fn build_info_names_the_version_commit_and_bpf_build() {
        let text = Metrics::new(bpf::Bpf::shipped(), None).encode();
        let line = text
            .lines()
            .find(|line| line.starts_with("enforcer_build_info{"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
            "{line}"
        );
        assert!(line.contains(&format!("commit=\"{COMMIT}\"")), "{line}");
        assert!(
            line.contains(&format!(
                "bpf_build=\"{:016x}\"",
                bpf::Bpf::shipped().build()
            )),
            "{line}"
        );
        assert!(line.ends_with(" 1"), "{line}");
        assert!(!text.contains("pod_labels_dropped"), "{text}");
    }
}
