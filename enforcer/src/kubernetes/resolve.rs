//! Where a pod's and a container's cgroups are, from what the API says about them: the pod uid,
//! its QoS class and the container statuses' `containerID`. The agent attaches to the pod's cgroup
//! as soon as it sees the pod (before its containers exist) and to a container's cgroup when a
//! policy names containers, so it needs the directories before any process runs in them.
//!
//! The kubelet names the pod's cgroup (by its cgroup driver and the pod's QoS class), the runtime
//! names the container's cgroup below it. The names are computed first; when the computed
//! directory is absent (another `--cgroup-root`, a node nested in a container, a runtime that
//! names its cgroups otherwise) a bounded walk matches names on the tree. Matching is exact (a
//! whole uid or id in a known place in the name), and a miss or a tie is reported as such, never
//! guessed: a policy on the wrong cgroup would enforce on someone else. `workload::workload` reads
//! the same names the other way; a test keeps the two in step.
use std::path::{Path, PathBuf};

use crate::{
    cgroup::{self, Cgroup, CgroupError, Walk},
    workload::Runtime,
};

/// Most directories the fallback walk looks at (a busy node has a few thousand cgroups). Past it
/// the walk reports [`Located::NotYet`]: the caller retries, it never attaches to a guess.
pub const WALK_LIMIT: usize = 20_000;

/// A pod's `status.qosClass`, which picks the kubelet's parent cgroup for the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// Reads `status.qosClass` as the API spells it.
    pub fn parse(class: &str) -> Option<Self> {
        match class {
            "Guaranteed" => Some(Self::Guaranteed),
            "Burstable" => Some(Self::Burstable),
            "BestEffort" => Some(Self::BestEffort),
            _ => None,
        }
    }

    /// The kubelet's QoS cgroup. Only Burstable and BestEffort have one: Guaranteed pods sit
    /// directly under the kubelet's top cgroup.
    fn tier(self) -> Option<&'static str> {
        match self {
            Self::Guaranteed => None,
            Self::Burstable => Some("burstable"),
            Self::BestEffort => Some("besteffort"),
        }
    }
}

/// The kubelet's cgroup driver (`cgroupDriver` in its configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// systemd slices: `kubepods.slice/kubepods-burstable.slice/...`.
    Systemd,
    /// Plain directories: `kubepods/burstable/...`.
    Cgroupfs,
}

impl Driver {
    /// The kubelet's top cgroup, below the cgroup2 root.
    fn top(self) -> &'static str {
        match self {
            Self::Systemd => "kubepods.slice",
            Self::Cgroupfs => "kubepods",
        }
    }

    /// The driver whose top cgroup exists under `root`, the systemd one first (the kubeadm
    /// default). `None` when the kubelet has created neither (yet, or under another root).
    pub fn detect(root: &Path) -> Option<Self> {
        [Self::Systemd, Self::Cgroupfs]
            .into_iter()
            .find(|driver| root.join(driver.top()).is_dir())
    }

    /// The driver that named a pod cgroup: systemd names are slices.
    fn of_pod_dir(pod_dir: &str) -> Self {
        if pod_dir.ends_with(".slice") {
            Self::Systemd
        } else {
            Self::Cgroupfs
        }
    }
}

/// A container as its status names it: `containerd://<id>`, `cri-o://<id>`, `docker://<id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerId {
    /// The runtime the scheme names; `None` for another scheme, which only the walk can find.
    pub runtime: Option<Runtime>,
    pub id: String,
}

impl ContainerId {
    /// Parses a status `containerID`. `None` when it has no `<scheme>://` or the id is not plain
    /// letters and digits (it becomes part of a path and of names matched on the tree).
    pub fn parse(container_id: &str) -> Option<Self> {
        let (scheme, id) = container_id.split_once("://")?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let runtime = match scheme {
            "containerd" => Some(Runtime::Containerd),
            "cri-o" => Some(Runtime::CriO),
            "docker" => Some(Runtime::Docker),
            _ => None,
        };
        Some(Self {
            runtime,
            id: id.to_owned(),
        })
    }
}

/// Whether a pod uid can be part of a cgroup name: a UUID, or the hash a static pod has.
fn is_plain_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The pod's cgroup the kubelet creates, relative to the cgroup2 root with a leading `/`. The
/// systemd driver writes the uid's dashes as underscores (a dash separates slice levels).
pub fn pod_path(driver: Driver, qos: QosClass, uid: &str) -> String {
    match driver {
        Driver::Systemd => {
            let uid = uid.replace('-', "_");
            match qos.tier() {
                None => format!("/kubepods.slice/kubepods-pod{uid}.slice"),
                Some(tier) => {
                    format!("/kubepods.slice/kubepods-{tier}.slice/kubepods-{tier}-pod{uid}.slice")
                }
            }
        }
        Driver::Cgroupfs => match qos.tier() {
            None => format!("/kubepods/pod{uid}"),
            Some(tier) => format!("/kubepods/{tier}/pod{uid}"),
        },
    }
}

/// The name of a container's cgroup below its pod's, as each runtime chooses it. This is the
/// cgroup the policy goes on: crun runs the processes one level down (`<leaf>/container`), and a
/// policy on the leaf covers its descendants. `None` for podman, which is no Kubernetes runtime.
pub fn container_leaf(driver: Driver, runtime: Runtime, id: &str) -> Option<String> {
    let leaf = match (driver, runtime) {
        (Driver::Systemd, Runtime::Containerd) => format!("cri-containerd-{id}.scope"),
        (Driver::Systemd, Runtime::CriO) => format!("crio-{id}.scope"),
        // cri-dockerd: dockerd names the unit.
        (Driver::Systemd, Runtime::Docker) => format!("docker-{id}.scope"),
        (Driver::Cgroupfs, Runtime::CriO) => format!("crio-{id}"),
        (Driver::Cgroupfs, Runtime::Containerd | Runtime::Docker) => id.to_owned(),
        (_, Runtime::Podman) => return None,
    };
    Some(leaf)
}

/// Whether a cgroup's name is a pod's, by its uid in either spelling: `pod<uid>` (cgroupfs) or
/// `<parents>-pod<uid_with_underscores>.slice` (systemd). Tetragon has seen nodes where the
/// dashes survive in a slice name; both spellings are matched in both forms.
pub fn names_pod(name: &str, uid: &str) -> bool {
    if !is_plain_uid(uid) {
        return false;
    }
    let stem = name.strip_suffix(".slice").unwrap_or(name);
    [uid.to_owned(), uid.replace('-', "_")]
        .iter()
        .any(|spelling| {
            let tail = format!("pod{spelling}");
            stem == tail
                || stem
                    .strip_suffix(&tail)
                    .is_some_and(|head| head.ends_with('-'))
        })
}

/// Whether a cgroup's name is the container's own cgroup: the bare id, or `<prefix>-<id>` and
/// `<prefix>:<id>` (containerd under a systemd slice without its systemd driver) with or without
/// `.scope`. Never a runtime monitor's (`crio-conmon-<id>.scope`), which holds no container
/// process, nor a name that only starts with the id.
pub fn names_container(name: &str, id: &str) -> bool {
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    if id.is_empty() || stem.contains("conmon") {
        return false;
    }
    stem == id
        || stem
            .strip_suffix(id)
            .is_some_and(|head| head.ends_with('-') || head.ends_with(':'))
}

/// What a search of the tree found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Located {
    /// The cgroup, relative to the cgroup2 root with a leading `/`.
    At(String),
    /// Not on the tree: not created yet (the kubelet makes the pod's cgroup, the runtime the
    /// container's, after the API shows them), gone, or beyond the walk's bound (`truncated`).
    /// Retry later; nothing is attached meanwhile.
    NotYet { truncated: bool },
    /// Several cgroups carry the name (a stale copy, a nested node): none is chosen.
    Ambiguous(Vec<String>),
}

/// Finds pods and containers on one cgroup tree.
#[derive(Clone, Debug)]
pub struct Locator {
    root: PathBuf,
    walk_limit: usize,
}

impl Locator {
    /// Searches the tree mounted at `root` (the cgroup2 mount, [`cgroup::root`]).
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            walk_limit: WALK_LIMIT,
        }
    }

    /// Searches the host's cgroup2 tree.
    pub fn on_host() -> Result<Self, CgroupError> {
        Ok(Self::new(cgroup::root()?))
    }

    /// Looks at no more than `limit` directories in a fallback walk.
    pub fn with_walk_limit(mut self, limit: usize) -> Self {
        self.walk_limit = limit;
        self
    }

    /// The pod's cgroup: where the detected driver puts it (the other driver's place next), else
    /// a bounded walk for a cgroup named by the pod's uid. For a static pod's mirror, `uid` is
    /// its `kubernetes.io/config.mirror` annotation: the kubelet runs the pod under that uid, the
    /// apiserver gave the mirror another.
    pub fn pod(&self, uid: &str, qos: QosClass) -> Located {
        if !is_plain_uid(uid) {
            return Located::NotYet { truncated: false };
        }
        let detected = Driver::detect(&self.root);
        let drivers = [detected, Some(Driver::Systemd), Some(Driver::Cgroupfs)];
        for driver in drivers.into_iter().flatten() {
            let path = pod_path(driver, qos, uid);
            if self.is_dir(&path) {
                return Located::At(path);
            }
        }
        self.search(|name| names_pod(name, uid))
    }

    /// The container's cgroup: the runtime's name below `pod_dir` (as [`Locator::pod`] found it),
    /// else a child of `pod_dir` carrying the id, else a bounded walk of the whole tree.
    pub fn container(&self, pod_dir: Option<&str>, container: &ContainerId) -> Located {
        if let Some(pod_dir) = pod_dir {
            let driver = Driver::of_pod_dir(pod_dir);
            if let Some(leaf) = container
                .runtime
                .and_then(|runtime| container_leaf(driver, runtime, &container.id))
            {
                let path = format!("{pod_dir}/{leaf}");
                if self.is_dir(&path) {
                    return Located::At(path);
                }
            }
            if let Some(found) = self.child_of(pod_dir, &container.id) {
                return found;
            }
        }
        self.search(|name| names_container(name, &container.id))
    }

    /// Turns a found path into the cgroup to attach to (its id and depth), on the host's cgroup2
    /// mount as `cgroup::resolve` finds it. `Ok(None)` when it vanished since it was found (the
    /// pod or container went away meanwhile).
    pub fn open(&self, path: &str) -> Result<Option<Cgroup>, CgroupError> {
        // `./` keeps `cgroup::resolve` from reading a name of digits as a cgroup id, or a path
        // that happens to exist outside the cgroup mount as that path.
        match cgroup::resolve(&format!(".{path}")) {
            Ok(found) => Ok(Some(found)),
            Err(CgroupError::Missing(..)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn is_dir(&self, path: &str) -> bool {
        self.root.join(path.trim_start_matches('/')).is_dir()
    }

    /// The one child of `pod_dir` named for the container, if the listing says anything.
    fn child_of(&self, pod_dir: &str, id: &str) -> Option<Located> {
        let entries = std::fs::read_dir(self.root.join(pod_dir.trim_start_matches('/'))).ok()?;
        let mut found: Vec<String> = entries
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| names_container(name, id))
            .map(|name| format!("{pod_dir}/{name}"))
            .collect();
        match found.len() {
            0 => None,
            1 => found.pop().map(Located::At),
            _ => {
                found.sort();
                Some(Located::Ambiguous(found))
            }
        }
    }

    /// Walks the tree, at most `walk_limit` directories, for cgroups whose name `matches`.
    fn search(&self, matches: impl Fn(&str) -> bool) -> Located {
        let mut seen = 0;
        let mut truncated = false;
        let mut found = Vec::new();
        cgroup::walk(&self.root, |_, relative, depth| {
            if depth == 0 {
                return Walk::Descend;
            }
            seen += 1;
            if seen > self.walk_limit {
                truncated = true;
                return Walk::Stop;
            }
            if relative
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(&matches)
            {
                found.push(cgroup::display_path(relative));
            }
            Walk::Descend
        });
        match found.len() {
            0 => Located::NotYet { truncated },
            1 => Located::At(found.remove(0)),
            _ => {
                found.sort();
                Located::Ambiguous(found)
            }
        }
    }
}

#[cfg(test)]
mod tests;
