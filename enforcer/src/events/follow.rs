//! Following the event stream from wherever it is: the running daemon's stream when a daemon
//! runs (any number of readers see every event), else the pinned ring buffer itself, handing over
//! to a daemon that starts meanwhile rather than splitting the events with it.
use std::{future::Future, io, path::Path, time::Duration};

use bytes::BytesMut;
use tokio::{io::AsyncReadExt, net::UnixStream};

use super::{
    Record, Sink,
    consumer::{self, Consumer},
};
use crate::{
    bpf,
    cgroup::PathCache,
    daemon::{self, EventStream, Frame},
    error::ExitError,
    kubernetes::names::PodRef,
    paths::EVENT_SOCKET,
};

/// How often a reader of the ring buffer looks for a daemon that started since.
const DAEMON_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why following ended early.
#[derive(Debug)]
pub enum FollowError {
    /// The reader of the output went away (`tail | head -3`): end quietly.
    ReaderGone,
    Failed(anyhow::Error),
}

impl From<io::Error> for FollowError {
    fn from(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::BrokenPipe {
            Self::ReaderGone
        } else {
            Self::Failed(err.into())
        }
    }
}

/// Keeps only the events of one cgroup subtree and, by the names the daemon's Kubernetes node
/// agent gives them, of one namespace, pod or container.
#[derive(Default)]
pub struct Filter {
    root: Option<String>,
    paths: PathCache,
    kubernetes: PodFilter,
}

/// Kubernetes names an event must carry (each when given).
#[derive(Clone, Debug, Default)]
pub struct PodFilter {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
}

impl PodFilter {
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none() && self.pod.is_none() && self.container.is_none()
    }

    fn admits(&self, names: Option<&PodRef>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(names) = names else {
            return false;
        };
        let matches = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|want| have == Some(want))
        };
        matches(&self.namespace, Some(&names.namespace))
            && matches(&self.pod, Some(&names.pod))
            && matches(&self.container, names.container.as_deref())
    }
}

impl Filter {
    /// `root` is a cgroup path relative to the cgroup2 mount, with a leading `/`.
    pub fn subtree(root: String) -> Self {
        Self {
            root: Some(root),
            ..Self::default()
        }
    }

    /// Also only events whose Kubernetes names match `pods`.
    pub fn with_pods(mut self, pods: PodFilter) -> Self {
        self.kubernetes = pods;
        self
    }

    fn admits(&mut self, cgroup_id: u64, names: Option<&PodRef>) -> bool {
        self.kubernetes.admits(names)
            && self
                .root
                .as_deref()
                .is_none_or(|root| in_subtree(&self.paths.path(cgroup_id), root))
    }
}

fn in_subtree(path: &str, root: &str) -> bool {
    root == "/"
        || path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Hands `sink` every event (of the `filter`'s subtree) until `stop` resolves, the sink fails,
/// or the daemon being read goes away (an error of its own: a person watching must notice that
/// the stream stopped).
pub async fn follow<S: Sink<Error = FollowError>>(
    bpf: bpf::Bpf,
    filter: Option<Filter>,
    sink: &mut S,
    stop: impl Future<Output = ()>,
) -> Result<(), FollowError> {
    let mut stop = std::pin::pin!(stop);
    let pods = filter.as_ref().is_some_and(|f| !f.kubernetes.is_empty());
    let mut sink = Filtered { filter, sink };
    let stream = match daemon::connect().await.map_err(FollowError::Failed)? {
        Some(stream) => stream,
        None if pods => return Err(FollowError::Failed(names_needed("no enforcer daemon runs"))),
        None => {
            let maps = bpf
                .open_event_maps()
                .map_err(|err| FollowError::Failed(err.into()))?;
            sink.started()?;
            match follow_ring(maps, &mut sink, &mut stop).await? {
                Some(stream) => stream,
                None => return Ok(()),
            }
        }
    };
    if pods && !stream.kubernetes {
        return Err(FollowError::Failed(names_needed(
            "the enforcer daemon runs without its Kubernetes node agent",
        )));
    }
    sink.started()?;
    follow_daemon(stream.stream, &mut sink, &mut stop).await
}

/// Why `--namespace`, `--pod` and `--container` cannot filter here.
fn names_needed(why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "--namespace, --pod and --container filter by the names the Kubernetes node agent gives events, and {why}; run `enforcer daemon --kubernetes` (the DaemonSet does), or filter by --cgroup"
    )
}

/// Consumes the pinned ring buffer while no daemon runs. A daemon started meanwhile becomes the
/// ring buffer's consumer: the reader then hands over to its event stream (returned).
async fn follow_ring<S: Sink<Error = FollowError>>(
    maps: bpf::EventMaps,
    sink: &mut S,
    mut stop: impl Future<Output = ()> + Unpin,
) -> Result<Option<EventStream>, FollowError> {
    let mut consumer = Consumer::new(maps).map_err(|err| {
        FollowError::Failed(anyhow::anyhow!("cannot watch the ring buffer: {err}"))
    })?;
    let mut daemon_check = tokio::time::interval(DAEMON_CHECK_INTERVAL);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(None),
            drained = consumer.next(sink) => drained?,
            _ = daemon_check.tick() => {
                if Path::new(EVENT_SOCKET).exists()
                    && let Ok(Some(stream)) = daemon::connect().await
                {
                    while consumer.drain_now(sink)? {}
                    eprintln!(
                        "enforcer: an enforcer daemon started: reading its event stream from now on (events it read before this tail connected are not shown here)"
                    );
                    return Ok(Some(stream));
                }
            }
        }
    }
}

/// Reads the daemon's event stream (past its greeting) until the daemon goes away.
async fn follow_daemon<S: Sink<Error = FollowError>>(
    mut stream: UnixStream,
    sink: &mut S,
    mut stop: impl Future<Output = ()> + Unpin,
) -> Result<(), FollowError> {
    let mut ticker = tokio::time::interval(consumer::DRAIN_INTERVAL);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        buf.reserve(64 * 1024);
        tokio::select! {
            () = &mut stop => return Ok(()),
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
                        return Err(FollowError::Failed(
                            anyhow::Error::new(err).context(format!("cannot read {}", EVENT_SOCKET)),
                        ));
                    }
                };
                while let Some(frame) = Frame::decode(&mut buf)
                    .map_err(|err| FollowError::Failed(err.into()))?
                {
                    match frame {
                        Frame::Event(record) => sink.event(&record)?,
                        Frame::Named(record, names) => sink.named_event(&record, &names)?,
                        Frame::Dropped(count) => sink.dropped(count)?,
                        Frame::Lagged(count) => sink.lagged(count)?,
                    }
                }
                sink.drained(false)?;
                if gone {
                    return Err(FollowError::Failed(
                        ExitError::daemon_gone(format!(
                            "the daemon went away (its event stream {} closed); enforcement continues; run `enforcer tail` again to keep reading events",
                            EVENT_SOCKET
                        ))
                        .into(),
                    ));
                }
            }
            _ = ticker.tick() => sink.drained(true)?,
        }
    }
}

/// A sink that passes on only the events its filter admits.
struct Filtered<'a, S> {
    filter: Option<Filter>,
    sink: &'a mut S,
}

impl<S: Sink> Sink for Filtered<'_, S> {
    type Error = S::Error;

    fn started(&mut self) -> Result<(), S::Error> {
        self.sink.started()
    }

    fn event(&mut self, record: &Record) -> Result<(), S::Error> {
        if let Some(filter) = &mut self.filter
            && !filter.admits(record.raw.cgroup_id, None)
        {
            return Ok(());
        }
        self.sink.event(record)
    }

    fn named_event(&mut self, record: &Record, names: &PodRef) -> Result<(), S::Error> {
        if let Some(filter) = &mut self.filter
            && !filter.admits(record.raw.cgroup_id, Some(names))
        {
            return Ok(());
        }
        self.sink.named_event(record, names)
    }

    fn dropped(&mut self, count: u64) -> Result<(), S::Error> {
        self.sink.dropped(count)
    }

    fn lagged(&mut self, count: u64) -> Result<(), S::Error> {
        self.sink.lagged(count)
    }

    fn drained(&mut self, tick: bool) -> Result<(), S::Error> {
        self.sink.drained(tick)
    }
}

#[cfg(test)]
mod tests {
    use super::{PodFilter, PodRef, in_subtree};

    #[test]
    fn pod_filters_need_names_and_match_each_given_one() {
        let names = PodRef {
            namespace: "shop".into(),
            pod: "web-1".into(),
            pod_uid: "u".into(),
            container: Some("nginx".into()),
            policies: Vec::new(),
        };
        let filter =
            |namespace: Option<&str>, pod: Option<&str>, container: Option<&str>| PodFilter {
                namespace: namespace.map(Into::into),
                pod: pod.map(Into::into),
                container: container.map(Into::into),
            };
        assert!(filter(None, None, None).admits(None));
        assert!(!filter(Some("shop"), None, None).admits(None));
        assert!(filter(Some("shop"), None, None).admits(Some(&names)));
        assert!(filter(Some("shop"), Some("web-1"), Some("nginx")).admits(Some(&names)));
        assert!(!filter(Some("shop"), Some("web-2"), None).admits(Some(&names)));
        let pod_level = PodRef {
            container: None,
            ..names
        };
        assert!(!filter(None, None, Some("nginx")).admits(Some(&pod_level)));
        assert!(filter(None, Some("web-1"), None).admits(Some(&pod_level)));
    }

    #[test]
    fn subtree_filter_matches_descendants_only() {
        assert!(in_subtree("/pod", "/pod"));
        assert!(in_subtree("/pod/ctr", "/pod"));
        assert!(!in_subtree("/pod2", "/pod"));
        assert!(in_subtree("/anything", "/"));
    }
}
