//! The resolver against real naming samples (kubelet's layout for both drivers and the three QoS
//! classes, each runtime's leaf names) and against small trees built in a temporary directory.
use std::fs;

use super::*;
use crate::workload::workload;

const UID: &str = "b5a7c8e2-3f1d-4c6a-9e0b-7d2f1a4c8e63";
const UID_: &str = "b5a7c8e2_3f1d_4c6a_9e0b_7d2f1a4c8e63";
const ID: &str = "3f2a9c1b4d5e6f708192a3b4c5d6e7f80912a3b4c5d6e7f8091a2b3c4d5e6f70";
const NODE: &str = "9d8c7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877665544";

const DRIVERS: [Driver; 2] = [Driver::Systemd, Driver::Cgroupfs];
const CLASSES: [QosClass; 3] = [
    QosClass::Guaranteed,
    QosClass::Burstable,
    QosClass::BestEffort,
];
const RUNTIMES: [Runtime; 3] = [Runtime::Containerd, Runtime::CriO, Runtime::Docker];

/// The kubelet's pod cgroups (kubelet `cgroup_manager_linux.go`, `qos_container_manager_linux.go`).
fn expected_pod(driver: Driver, qos: QosClass) -> String {
    match (driver, qos) {
        (Driver::Systemd, QosClass::Guaranteed) => {
            format!("/kubepods.slice/kubepods-pod{UID_}.slice")
        }
        (Driver::Systemd, QosClass::Burstable) => {
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice")
        }
        (Driver::Systemd, QosClass::BestEffort) => {
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice")
        }
        (Driver::Cgroupfs, QosClass::Guaranteed) => format!("/kubepods/pod{UID}"),
        (Driver::Cgroupfs, QosClass::Burstable) => format!("/kubepods/burstable/pod{UID}"),
        (Driver::Cgroupfs, QosClass::BestEffort) => format!("/kubepods/besteffort/pod{UID}"),
    }
}

/// The runtimes' container cgroups (containerd `SystemdCgroup`, CRI-O, cri-dockerd).
fn expected_leaf(driver: Driver, runtime: Runtime) -> String {
    match (driver, runtime) {
        (Driver::Systemd, Runtime::Containerd) => format!("cri-containerd-{ID}.scope"),
        (Driver::Systemd, Runtime::CriO) => format!("crio-{ID}.scope"),
        (Driver::Systemd, Runtime::Docker) => format!("docker-{ID}.scope"),
        (Driver::Cgroupfs, Runtime::CriO) => format!("crio-{ID}"),
        (Driver::Cgroupfs, _) => ID.to_owned(),
        (_, Runtime::Podman) => unreachable!("podman is not a Kubernetes runtime"),
    }
}

#[test]
fn every_driver_class_and_runtime_gives_the_real_names() {
    for driver in DRIVERS {
        for qos in CLASSES {
            let pod = pod_path(driver, qos, UID);
            assert_eq!(pod, expected_pod(driver, qos));
            for runtime in RUNTIMES {
                assert_eq!(
                    container_leaf(driver, runtime, ID),
                    Some(expected_leaf(driver, runtime)),
                    "{driver:?} {runtime:?}"
                );
            }
        }
    }
    assert_eq!(container_leaf(Driver::Systemd, Runtime::Podman, ID), None);
}

#[test]
fn paths_seen_on_real_nodes() {
    // k3s with containerd (cgroupfs), kubeadm with docker and with CRI-O (systemd, Guaranteed),
    // CRI-O under cgroupfs as Tetragon's hook logs show it.
    let cases = [
        (
            Driver::Cgroupfs,
            QosClass::Guaranteed,
            Runtime::Containerd,
            format!("/kubepods/pod{UID}/{ID}"),
        ),
        (
            Driver::Systemd,
            QosClass::Guaranteed,
            Runtime::Docker,
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope"),
        ),
        (
            Driver::Systemd,
            QosClass::Guaranteed,
            Runtime::CriO,
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope"),
        ),
        (
            Driver::Cgroupfs,
            QosClass::BestEffort,
            Runtime::CriO,
            format!("/kubepods/besteffort/pod{UID}/crio-{ID}"),
        ),
        (
            Driver::Systemd,
            QosClass::Burstable,
            Runtime::Containerd,
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/\
                 cri-containerd-{ID}.scope"
            ),
        ),
    ];
    for (driver, qos, runtime, path) in cases {
        let leaf = container_leaf(driver, runtime, ID).unwrap();
        assert_eq!(format!("{}/{leaf}", pod_path(driver, qos, UID)), path);
    }
}

#[test]
fn computed_paths_read_back_as_the_same_pod_and_container() {
    for driver in DRIVERS {
        for qos in CLASSES {
            let pod = pod_path(driver, qos, UID);
            let found = workload(&pod).unwrap_or_else(|| panic!("nothing read from {pod}"));
            assert_eq!(found.pod_uid.as_deref(), Some(UID), "{pod}");
            assert_eq!(found.container, None, "{pod}");
            let pod_name = pod.rsplit('/').next().unwrap();
            assert!(names_pod(pod_name, UID), "{pod_name}");
            for runtime in RUNTIMES {
                let leaf = container_leaf(driver, runtime, ID).unwrap();
                assert!(names_container(&leaf, ID), "{leaf}");
                // crun's sub-cgroup is in the same container.
                for path in [format!("{pod}/{leaf}"), format!("{pod}/{leaf}/container")] {
                    let found =
                        workload(&path).unwrap_or_else(|| panic!("nothing read from {path}"));
                    assert_eq!(found.pod_uid.as_deref(), Some(UID), "{path}");
                    let container = found.container.expect(&path);
                    assert_eq!(container.id, ID, "{path}");
                    assert!(!container.monitor, "{path}");
                }
            }
        }
    }
}

#[test]
fn status_fields_parse() {
    assert_eq!(QosClass::parse("Burstable"), Some(QosClass::Burstable));
    assert_eq!(QosClass::parse("BestEffort"), Some(QosClass::BestEffort));
    assert_eq!(QosClass::parse("Guaranteed"), Some(QosClass::Guaranteed));
    assert_eq!(QosClass::parse("besteffort"), None);
    for (status, runtime) in [
        ("containerd://", Some(Runtime::Containerd)),
        ("cri-o://", Some(Runtime::CriO)),
        ("docker://", Some(Runtime::Docker)),
        ("kata://", None),
    ] {
        let parsed = ContainerId::parse(&format!("{status}{ID}")).unwrap();
        assert_eq!(parsed.runtime, runtime, "{status}");
        assert_eq!(parsed.id, ID);
    }
    for bad in [
        ID.to_owned(),
        "containerd://".to_owned(),
        format!("containerd://../{ID}"),
        format!("containerd://{ID}/container"),
    ] {
        assert_eq!(ContainerId::parse(&bad), None, "{bad}");
    }
}

#[test]
fn pod_names_match_exactly_in_both_spellings() {
    for name in [
        format!("pod{UID}"),
        format!("kubepods-besteffort-pod{UID_}.slice"),
        format!("kubepods-pod{UID_}.slice"),
        format!("kubepods-burstable-pod{UID}.slice"),
        format!("kubelet-kubepods-besteffort-pod{UID_}.slice"),
    ] {
        assert!(names_pod(&name, UID), "{name}");
    }
    for name in [
        format!("pod{UID}x"),
        format!("xpod{UID}"),
        format!("pod{}", &UID[..35]),
        "kubepods-besteffort.slice".to_owned(),
        format!("cri-containerd-{ID}.scope"),
    ] {
        assert!(!names_pod(&name, UID), "{name}");
    }
    assert!(!names_pod("pod", ""));
    assert!(!names_pod(&format!("pod{UID}"), "../x"));
}

#[test]
fn container_names_match_exactly_and_skip_monitors() {
    for name in [
        ID.to_owned(),
        format!("cri-containerd-{ID}.scope"),
        format!("crio-{ID}.scope"),
        format!("crio-{ID}"),
        format!("docker-{ID}.scope"),
        format!("kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"),
    ] {
        assert!(names_container(&name, ID), "{name}");
    }
    for name in [
        format!("crio-conmon-{ID}.scope"),
        format!("libpod-conmon-{ID}.scope"),
        format!("{ID}0"),
        format!("crio-{ID}.service"),
        format!("x{ID}"),
        format!("crio-{NODE}.scope"),
        "container".to_owned(),
    ] {
        assert!(!names_container(&name, ID), "{name}");
    }
    assert!(!names_container("crio-.scope", ""));
}

/// A cgroup-like tree of plain directories, removed when dropped.
struct Tree(PathBuf);

impl Tree {
    fn new(name: &str, dirs: &[String]) -> Self {
        let top =
            std::env::temp_dir().join(format!("enforcer-resolve-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&top);
        fs::create_dir_all(&top).unwrap();
        for dir in dirs {
            fs::create_dir_all(top.join(dir.trim_start_matches('/'))).unwrap();
        }
        Self(top)
    }

    fn locator(&self) -> Locator {
        Locator::new(self.0.clone())
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn containerd() -> ContainerId {
    ContainerId::parse(&format!("containerd://{ID}")).unwrap()
}

fn cri_o() -> ContainerId {
    ContainerId::parse(&format!("cri-o://{ID}")).unwrap()
}

#[test]
fn the_driver_is_read_from_the_tree() {
    let systemd = Tree::new("systemd", &["/kubepods.slice".to_owned()]);
    assert_eq!(Driver::detect(&systemd.0), Some(Driver::Systemd));
    let cgroupfs = Tree::new("cgroupfs", &["/kubepods/burstable".to_owned()]);
    assert_eq!(Driver::detect(&cgroupfs.0), Some(Driver::Cgroupfs));
    let neither = Tree::new("neither", &["/system.slice".to_owned()]);
    assert_eq!(Driver::detect(&neither.0), None);
}

#[test]
fn computed_places_are_found_for_every_driver_class_and_runtime() {
    for driver in DRIVERS {
        for qos in CLASSES {
            for runtime in RUNTIMES {
                let pod = expected_pod(driver, qos);
                let leaf = format!("{pod}/{}", expected_leaf(driver, runtime));
                let tree = Tree::new("computed", std::slice::from_ref(&leaf));
                let locator = tree.locator().with_walk_limit(0);
                assert_eq!(locator.pod(UID, qos), Located::At(pod.clone()));
                let scheme = match runtime {
                    Runtime::Containerd => "containerd",
                    Runtime::CriO => "cri-o",
                    _ => "docker",
                };
                let id = ContainerId::parse(&format!("{scheme}://{ID}")).unwrap();
                assert_eq!(locator.container(Some(&pod), &id), Located::At(leaf));
            }
        }
    }
}

#[test]
fn the_policy_goes_on_the_leaf_not_the_monitor_or_crun_child() {
    let pod = expected_pod(Driver::Systemd, QosClass::Burstable);
    let tree = Tree::new(
        "crio",
        &[
            format!("{pod}/crio-conmon-{ID}.scope"),
            format!("{pod}/crio-{ID}.scope/container"),
        ],
    );
    let leaf = format!("{pod}/crio-{ID}.scope");
    // By the computed name, by the pod's listing (scheme unknown), and by the walk.
    let unknown = ContainerId {
        runtime: None,
        id: ID.to_owned(),
    };
    let locator = tree.locator();
    assert_eq!(
        locator.container(Some(&pod), &cri_o()),
        Located::At(leaf.clone())
    );
    assert_eq!(
        locator.container(Some(&pod), &unknown),
        Located::At(leaf.clone())
    );
    assert_eq!(locator.container(None, &cri_o()), Located::At(leaf));
}

#[test]
fn a_node_nested_in_a_container_is_found_by_the_walk() {
    let pod = format!(
        "/system.slice/docker-{NODE}.scope/kubelet.slice/kubelet-kubepods.slice/\
         kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice"
    );
    let leaf = format!("{pod}/cri-containerd-{ID}.scope");
    let tree = Tree::new("nested", std::slice::from_ref(&leaf));
    let locator = tree.locator();
    assert_eq!(
        locator.pod(UID, QosClass::BestEffort),
        Located::At(pod.clone())
    );
    assert_eq!(
        locator.container(Some(&pod), &containerd()),
        Located::At(leaf)
    );
}

#[test]
fn a_runtime_naming_outside_the_pod_is_found_by_the_walk() {
    // containerd told to use a systemd slice as a cgroupfs path.
    let leaf = format!("/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}");
    let tree = Tree::new("colon", &[leaf.clone(), "/kubepods.slice".to_owned()]);
    let locator = tree.locator();
    assert_eq!(
        locator.container(None, &containerd()),
        Located::At(leaf.clone())
    );
    let pod = expected_pod(Driver::Systemd, QosClass::BestEffort);
    assert_eq!(
        locator.container(Some(&pod), &containerd()),
        Located::At(leaf)
    );
}

#[test]
fn absent_cgroups_are_not_found_yet() {
    let tree = Tree::new(
        "absent",
        &[
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
                UID_.replace('b', "c")
            ),
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope"),
        ],
    );
    let locator = tree.locator();
    let not_yet = Located::NotYet { truncated: false };
    assert_eq!(
        locator.pod(UID, QosClass::BestEffort),
        Located::At(format!("/kubepods.slice/kubepods-pod{UID_}.slice"))
    );
    let pod = expected_pod(Driver::Systemd, QosClass::Guaranteed);
    assert_eq!(locator.container(Some(&pod), &cri_o()), not_yet);
    assert_eq!(
        locator.pod(&UID.replace('5', "6"), QosClass::BestEffort),
        not_yet
    );
}

#[test]
fn a_walk_past_its_bound_says_so_and_finds_nothing() {
    let pod = format!("/a/b/c/d/pod{UID}");
    let tree = Tree::new("bound", std::slice::from_ref(&pod));
    let locator = tree.locator().with_walk_limit(3);
    assert_eq!(
        locator.pod(UID, QosClass::Burstable),
        Located::NotYet { truncated: true }
    );
    assert_eq!(
        tree.locator()
            .with_walk_limit(5)
            .pod(UID, QosClass::Burstable),
        Located::At(pod)
    );
}

#[test]
fn two_cgroups_with_the_name_are_ambiguous() {
    let first = format!("/one/kubepods-pod{UID_}.slice");
    let second = format!("/two/pod{UID}");
    let tree = Tree::new("ambiguous", &[first.clone(), second.clone()]);
    assert_eq!(
        tree.locator().pod(UID, QosClass::Guaranteed),
        Located::Ambiguous(vec![first, second])
    );
}

#[test]
fn found_paths_open_on_the_host_tree() {
    // Hosts without a cgroup2 mount have nothing to open.
    let Ok(locator) = Locator::on_host() else {
        return;
    };
    let root = locator.open("/").unwrap().expect("the root exists");
    assert_eq!((root.path.as_str(), root.level), ("/", 0));
    // Gone between finding and opening: nothing to attach, no error.
    assert_eq!(locator.open("/enforcer-no-such-pod/123").unwrap(), None);
}
