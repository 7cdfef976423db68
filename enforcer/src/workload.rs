//! What a cgroup's path says about the workload in it: the container runtime and container id,
//! the Kubernetes pod uid, the systemd unit, by the names runtimes and the kubelet give their
//! cgroups. For display and defaults only: enforcement keys on cgroup ids, never on these names.
use crate::cgroup::{Cgroup, Walk, display_path, root, walk};

/// Cgroups that container managers create to hold containers, by name.
const CONTAINER_PARENTS: [&str; 6] = [
    "kubepods",
    "kubepods.slice",
    "docker",
    "machine.slice",
    "libpod_parent",
    "kubelet.slice",
];

/// Most directories [`holds_containers`] looks at below a cgroup.
const SCAN_LIMIT: usize = 10_000;

/// Whether `target` is or holds containers, by the names runtimes give their cgroups: it is in a
/// container or a pod ([`workload`]), a path component is a known container parent (`kubepods`,
/// `docker`, `machine.slice`, ...), or a cgroup below it (the first 10,000 looked at) is a
/// container's.
pub fn holds_containers(target: &Cgroup) -> bool {
    let path = target.path.as_str();
    if workload(path).is_some_and(|w| w.container.is_some() || w.pod_uid.is_some())
        || path
            .split('/')
            .any(|name| CONTAINER_PARENTS.contains(&name))
    {
        return true;
    }
    let Ok(root) = root() else { return false };
    let top = root.join(path.trim_start_matches('/'));
    let mut seen = 0;
    let mut found = false;
    walk(&top, |dir, _, depth| {
        if depth == 0 {
            return Walk::Descend;
        }
        seen += 1;
        if seen > SCAN_LIMIT {
            return Walk::Stop;
        }
        if let Ok(relative) = dir.strip_prefix(&root)
            && workload(&display_path(relative)).is_some_and(|w| w.container.is_some())
        {
            found = true;
            return Walk::Stop;
        }
        Walk::Descend
    });
    found
}

/// A container runtime whose cgroup names say which container a cgroup belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
}

impl Runtime {
    /// The runtime's name, as ECS `container.runtime` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Podman => "podman",
        }
    }
}

/// How many hex digits of a container id people see (as `docker ps`, `crictl ps`, `podman ps`).
pub const SHORT_ID_LEN: usize = 12;

/// The container a cgroup belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub runtime: Runtime,
    /// The full id: 64 lowercase hex digits.
    pub id: String,
    /// The cgroup holds the runtime's monitor of this container (`conmon`, for CRI-O and podman:
    /// `crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope`), not the container's own processes.
    pub monitor: bool,
}

impl Container {
    /// The first 12 hex digits of the id.
    pub fn short_id(&self) -> &str {
        &self.id[..SHORT_ID_LEN]
    }
}

/// What a cgroup path says about the workload in it: read from the names container runtimes,
/// the kubelet and systemd give their cgroups. Every part is optional; [`workload`] returns `None`
/// when none is known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// The innermost container the cgroup is in (a sub-cgroup of a container is still in it).
    pub container: Option<Container>,
    /// The Kubernetes pod uid (with dashes), when the cgroup is in a pod.
    pub pod_uid: Option<String>,
    /// The innermost systemd unit (`nginx.service`, `session-3.scope`, `user.slice`) below the
    /// container or pod, or anywhere in the path when there is neither.
    pub unit: Option<String>,
}

impl Workload {
    /// A few words for a narrow column: `containerd:3f2a9c1b4d5e pod:1234abcd`,
    /// `docker:3f2a9c1b4d5e`, `conmon:3f2a9c1b4d5e` (a runtime monitor), `pod:1234abcd`,
    /// `nginx.service`. A pod shows the first 8 characters of its uid.
    pub fn label(&self) -> String {
        let mut words = Vec::new();
        if let Some(container) = &self.container {
            let tag = if container.monitor {
                "conmon"
            } else {
                container.runtime.name()
            };
            words.push(format!("{tag}:{}", container.short_id()));
        }
        if let Some(uid) = &self.pod_uid {
            words.push(format!("pod:{}", &uid[..8]));
        }
        if let Some(unit) = &self.unit {
            words.push(unit.clone());
        }
        words.join(" ")
    }
}

/// Recognises the workload from a cgroup path (relative to the cgroup2 root, as [`Cgroup::path`]).
/// Known names, any depth (rootless and nested runtimes put them below other cgroups):
///
/// | component | meaning |
/// |---|---|
/// | `docker-<id>.scope`; `<id>` under `docker` | docker, systemd and cgroupfs drivers |
/// | `cri-containerd-<id>.scope`; `<id>` under a pod | containerd (CRI), systemd and cgroupfs drivers |
/// | `nerdctl-<id>.scope` | containerd (nerdctl) |
/// | `crio-<id>[.scope]` | CRI-O; `crio-conmon-<id>[.scope]` is its monitor |
/// | `libpod-<id>[.scope]` | podman; `libpod-conmon-<id>[.scope]` is its monitor |
/// | `…-pod<uid with _>.slice`; `pod<uid>` | Kubernetes pod, systemd and cgroupfs drivers |
/// | `<name>.service`, `.scope`, `.slice`, `.socket`, `.mount`, `.swap` | systemd unit |
///
/// `<id>` is 64 lowercase hex digits. A name deeper in the path is more specific: a container
/// below a pod is in that pod, a pod below a container (Kubernetes in Docker) is not in that
/// container, and a cgroup with no known name below a container (crun's `container` sub-cgroup)
/// is still in the container.
pub fn workload(path: &str) -> Option<Workload> {
    let mut found = Workload::default();
    let mut parent: Option<&str> = None;
    let mut parent_is_pod = false;
    for name in path.split('/').filter(|name| !name.is_empty()) {
        let pod = pod_uid(name);
        let is_pod = pod.is_some();
        if let Some(uid) = pod {
            found = Workload {
                pod_uid: Some(uid),
                ..Workload::default()
            };
        } else if let Some(container) = container(name, parent, parent_is_pod) {
            found.container = Some(container);
            found.unit = None;
        } else if is_unit(name) {
            found.unit = Some(name.to_owned());
        }
        parent_is_pod = is_pod;
        parent = Some(name);
    }
    (found != Workload::default()).then_some(found)
}

/// Container cgroups named `<prefix><id>` or `<prefix><id>.scope`.
const CONTAINER_PREFIXES: [(&str, Runtime, bool); 7] = [
    ("docker-", Runtime::Docker, false),
    ("cri-containerd-", Runtime::Containerd, false),
    ("nerdctl-", Runtime::Containerd, false),
    ("crio-conmon-", Runtime::CriO, true),
    ("crio-", Runtime::CriO, false),
    ("libpod-conmon-", Runtime::Podman, true),
    ("libpod-", Runtime::Podman, false),
];

fn container(name: &str, parent: Option<&str>, parent_is_pod: bool) -> Option<Container> {
    let make = |runtime, id: &str, monitor| {
        is_container_id(id).then(|| Container {
            runtime,
            id: id.to_owned(),
            monitor,
        })
    };
    if is_container_id(name) {
        // cgroupfs drivers: the bare id, under `/docker` or under the pod's cgroup (containerd;
        // CRI-O prefixes `crio-` there too).
        return match parent {
            Some("docker") => make(Runtime::Docker, name, false),
            _ if parent_is_pod => make(Runtime::Containerd, name, false),
            _ => None,
        };
    }
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    CONTAINER_PREFIXES
        .iter()
        .find_map(|&(prefix, runtime, monitor)| make(runtime, stem.strip_prefix(prefix)?, monitor))
}

fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The pod uid of a pod cgroup: `kubepods-besteffort-pod<uid>.slice` (systemd driver; the uid's
/// dashes are underscores, as a dash separates slice levels) or `pod<uid>` (cgroupfs driver).
fn pod_uid(name: &str) -> Option<String> {
    let uid = match name.strip_suffix(".slice") {
        Some(stem) => stem
            .rsplit('-')
            .next()?
            .strip_prefix("pod")?
            .replace('_', "-"),
        None => name.strip_prefix("pod")?.to_owned(),
    };
    is_pod_uid(&uid).then_some(uid)
}

/// A UUID (`8-4-4-4-12` hex digits), or 32 hex digits (a static pod's uid is a hash).
fn is_pod_uid(uid: &str) -> bool {
    let bytes = uid.as_bytes();
    match bytes.len() {
        32 => bytes.iter().all(u8::is_ascii_hexdigit),
        36 => bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        }),
        _ => false,
    }
}

/// A systemd unit with a cgroup of its own.
fn is_unit(name: &str) -> bool {
    const KINDS: [&str; 6] = ["service", "scope", "slice", "socket", "mount", "swap"];
    name.rsplit_once('.').is_some_and(|(stem, kind)| {
        KINDS.contains(&kind)
            && !stem.is_empty()
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c1b4d5e6f708192a3b4c5d6e7f80912a3b4c5d6e7f8091a2b3c4d5e6f70";
    const NODE: &str = "9d8c7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877665544";
    const UID: &str = "1234abcd-5678-4ef0-9abc-def012345678";
    const UID_: &str = "1234abcd_5678_4ef0_9abc_def012345678";

    fn container(runtime: Runtime, id: &str) -> Option<Container> {
        Some(Container {
            runtime,
            id: id.to_owned(),
            monitor: false,
        })
    }

    fn in_container(path: &str, runtime: Runtime, pod: Option<&str>) -> Workload {
        let found = workload(path).unwrap_or_else(|| panic!("nothing found in {path}"));
        assert_eq!(found.container, container(runtime, ID), "{path}");
        assert_eq!(found.pod_uid.as_deref(), pod, "{path}");
        assert_eq!(found.unit, None, "{path}");
        found
    }

    #[test]
    fn docker_containers_under_both_drivers() {
        let cgroupfs = in_container(&format!("/docker/{ID}"), Runtime::Docker, None);
        assert_eq!(cgroupfs.label(), "docker:3f2a9c1b4d5e");
        in_container(
            &format!("/system.slice/docker-{ID}.scope"),
            Runtime::Docker,
            None,
        );
        // Rootless docker, under the user's systemd instance.
        in_container(
            &format!("/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID}.scope"),
            Runtime::Docker,
            None,
        );
        // Docker in Docker: the inner container.
        in_container(
            &format!("/docker/{NODE}/docker/{ID}"),
            Runtime::Docker,
            None,
        );
    }

    #[test]
    fn containerd_under_kubernetes_with_both_drivers() {
        let systemd = in_container(
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/\
                 cri-containerd-{ID}.scope"
            ),
            Runtime::Containerd,
            Some(UID),
        );
        assert_eq!(systemd.label(), "containerd:3f2a9c1b4d5e pod:1234abcd");
        // Guaranteed pods sit directly under kubepods.
        in_container(
            &format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            Runtime::Containerd,
            Some(UID),
        );
        in_container(
            &format!("/kubepods/burstable/pod{UID}/{ID}"),
            Runtime::Containerd,
            Some(UID),
        );
        in_container(
            &format!("/kubepods/pod{UID}/{ID}"),
            Runtime::Containerd,
            Some(UID),
        );
        // nerdctl, outside Kubernetes.
        in_container(
            &format!("/system.slice/nerdctl-{ID}.scope"),
            Runtime::Containerd,
            None,
        );
    }

    #[test]
    fn static_pods_have_hash_uids() {
        let uid = "5f0c2f4f6e1d3f6f0a3b2e9a8c7d6b5a";
        in_container(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/\
                 cri-containerd-{ID}.scope"
            ),
            Runtime::Containerd,
            Some(uid),
        );
    }

    #[test]
    fn cri_o_containers_and_their_monitors() {
        let pod =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        let found = in_container(&format!("{pod}/crio-{ID}.scope"), Runtime::CriO, Some(UID));
        assert_eq!(found.label(), "cri-o:3f2a9c1b4d5e pod:1234abcd");
        // crun's sub-cgroup below the container's scope: still the container.
        in_container(
            &format!("{pod}/crio-{ID}.scope/container"),
            Runtime::CriO,
            Some(UID),
        );
        in_container(
            &format!("/kubepods/besteffort/pod{UID}/crio-{ID}"),
            Runtime::CriO,
            Some(UID),
        );
        let conmon = workload(&format!("{pod}/crio-conmon-{ID}.scope")).unwrap();
        assert_eq!(
            conmon.container,
            Some(Container {
                runtime: Runtime::CriO,
                id: ID.to_owned(),
                monitor: true
            })
        );
        assert_eq!(conmon.label(), "conmon:3f2a9c1b4d5e pod:1234abcd");
    }

    #[test]
    fn podman_containers_and_their_monitors() {
        in_container(
            &format!("/machine.slice/libpod-{ID}.scope/container"),
            Runtime::Podman,
            None,
        );
        in_container(
            &format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
            ),
            Runtime::Podman,
            None,
        );
        // A podman pod is not a Kubernetes pod.
        in_container(
            &format!("/machine.slice/machine-libpod_pod_{NODE}.slice/libpod-{ID}.scope"),
            Runtime::Podman,
            None,
        );
        in_container(
            &format!("/libpod_parent/libpod-{ID}"),
            Runtime::Podman,
            None,
        );
        let conmon = workload(&format!("/machine.slice/libpod-conmon-{ID}.scope")).unwrap();
        assert!(conmon.container.as_ref().is_some_and(|c| c.monitor));
        assert_eq!(conmon.label(), "conmon:3f2a9c1b4d5e");
    }

    #[test]
    fn a_pod_without_a_container() {
        for path in [
            format!("/kubepods/besteffort/pod{UID}"),
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
            ),
        ] {
            let found = workload(&path).unwrap();
            assert_eq!(found.pod_uid.as_deref(), Some(UID));
            assert_eq!((found.container, found.unit), (None, None), "{path}");
        }
    }

    #[test]
    fn kubernetes_in_docker_reports_the_inner_workload() {
        let kubelet =
            format!("/system.slice/docker-{NODE}.scope/kubelet.slice/kubelet-kubepods.slice");
        in_container(
            &format!(
                "{kubelet}/kubelet-kubepods-besteffort.slice/\
                 kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
            ),
            Runtime::Containerd,
            Some(UID),
        );
        // A unit inside a container: both.
        let found = workload(&format!(
            "/system.slice/docker-{NODE}.scope/system.slice/kubelet.service"
        ))
        .unwrap();
        assert_eq!(found.container, container(Runtime::Docker, NODE));
        assert_eq!(found.unit.as_deref(), Some("kubelet.service"));
        assert_eq!(found.label(), "docker:9d8c7b6a5f4e kubelet.service");
    }

    #[test]
    fn plain_systemd_units() {
        for (path, unit) in [
            ("/system.slice/nginx.service", "nginx.service"),
            ("/system.slice/nginx.service/workers", "nginx.service"),
            ("/system.slice/docker.service", "docker.service"),
            (
                "/user.slice/user-1000.slice/session-3.scope",
                "session-3.scope",
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/\
                 app-org.gnome.Terminal.slice/vte-spawn-1b2c3d4e.scope",
                "vte-spawn-1b2c3d4e.scope",
            ),
            ("/init.scope", "init.scope"),
            ("/system.slice/var-lib-docker.mount", "var-lib-docker.mount"),
            (
                "/kubepods.slice/kubepods-besteffort.slice",
                "kubepods-besteffort.slice",
            ),
            // Too short for a container id: an ordinary scope.
            (
                "/system.slice/docker-3f2a9c1b.scope",
                "docker-3f2a9c1b.scope",
            ),
        ] {
            let found = workload(path).unwrap_or_else(|| panic!("nothing found in {path}"));
            assert_eq!(found.unit.as_deref(), Some(unit), "{path}");
            assert_eq!(found.label(), unit);
            assert_eq!((found.container, found.pod_uid), (None, None), "{path}");
        }
    }

    #[test]
    fn unknown_names_say_nothing() {
        for path in [
            "/".to_owned(),
            "/demo".to_owned(),
            "/docker".to_owned(),
            "/docker/3f2a9c1b4d5e".to_owned(),
            "/kubepods/besteffort/pod1234".to_owned(),
            "<cgroup 42>".to_owned(),
            // A bare id needs a parent that says whose it is.
            format!("/mygroup/{ID}"),
            format!("/docker/{}", ID.to_uppercase()),
            format!("/kubepods/besteffort/{ID}"),
        ] {
            assert_eq!(workload(&path), None, "{path}");
        }
    }

    #[test]
    fn container_parents_hold_containers() {
        let at = |path: &str| Cgroup {
            id: 0,
            path: path.to_owned(),
            level: 1,
        };
        for path in [
            "/kubepods".to_owned(),
            "/kubepods.slice/kubepods-besteffort.slice".to_owned(),
            format!("/kubepods/besteffort/pod{UID}"),
            format!("/system.slice/docker-{ID}.scope"),
            "/machine.slice".to_owned(),
        ] {
            assert!(holds_containers(&at(&path)), "{path}");
        }
    }
}
