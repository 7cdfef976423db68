//! Every manifest in `deploy/` reads as the Kubernetes type its `kind` names, with no field the
//! type does not know (a misspelt key would otherwise be dropped without a word), and the
//! DaemonSets keep the promises the README makes: every node, the host's pins, the image this
//! build makes, and the capabilities-only variant without `privileged`. The example policies
//! read as the CRD types.
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Namespace, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::crd;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

/// A manifest, read as its type.
enum Manifest {
    Namespace,
    ServiceAccount,
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding,
    DaemonSet(Box<DaemonSet>),
    Crd,
    /// An example policy (deploy/examples/).
    Policy,
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("deploy/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            out.push(path);
        }
    }
    out.sort();
}

/// `value` as `T`, failing on any field `T` would skip.
fn typed<T: DeserializeOwned>(value: Value, what: &str) -> T {
    let mut unknown = Vec::new();
    let typed = serde_ignored::deserialize(value, |path| unknown.push(path.to_string()))
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(unknown.is_empty(), "{what}: unknown fields {unknown:?}");
    typed
}

/// A custom resource without its `apiVersion` and `kind` (which kube's types do not hold), after
/// checking the version is the CRDs' one.
fn custom_resource(mut value: Value, what: &str) -> Value {
    let version = &crd::definitions()[0].spec.versions[0].name;
    let expected = format!("{}/{version}", crd::GROUP);
    assert_eq!(value["apiVersion"], expected.as_str(), "{what}");
    let object = value.as_object_mut().expect("an object");
    object.remove("apiVersion");
    object.remove("kind");
    value
}

/// Every document of every YAML file under `deploy/`, with where it came from.
fn manifests() -> Vec<(String, Manifest)> {
    let mut files = Vec::new();
    yaml_files(Path::new(DEPLOY), &mut files);
    assert!(!files.is_empty(), "no YAML under {DEPLOY}");
    let mut out = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).expect("read manifest");
        for (i, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let value: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|err| panic!("{}: document {i}: {err}", file.display()));
            let kind = value["kind"].as_str().unwrap_or_default().to_owned();
            let what = format!("{} document {i} ({kind})", file.display());
            let manifest = match kind.as_str() {
                "Namespace" => {
                    typed::<Namespace>(value, &what);
                    Manifest::Namespace
                }
                "ServiceAccount" => {
                    typed::<ServiceAccount>(value, &what);
                    Manifest::ServiceAccount
                }
                "ClusterRole" => Manifest::ClusterRole(typed(value, &what)),
                "ClusterRoleBinding" => {
                    typed::<ClusterRoleBinding>(value, &what);
                    Manifest::ClusterRoleBinding
                }
                "DaemonSet" => Manifest::DaemonSet(typed(value, &what)),
                "CustomResourceDefinition" => {
                    typed::<CustomResourceDefinition>(value, &what);
                    Manifest::Crd
                }
                "ContainerPolicy" => {
                    typed::<crd::ContainerPolicy>(custom_resource(value, &what), &what);
                    Manifest::Policy
                }
                "ClusterContainerPolicy" => {
                    typed::<crd::ClusterContainerPolicy>(custom_resource(value, &what), &what);
                    Manifest::Policy
                }
                other => panic!("{what}: no test knows kind {other:?}; add it here"),
            };
            out.push((what, manifest));
        }
    }
    out
}

#[test]
fn every_manifest_reads_as_its_kind() {
    let all = manifests();
    let count = |pick: fn(&Manifest) -> bool| all.iter().filter(|(_, m)| pick(m)).count();
    assert_eq!(count(|m| matches!(m, Manifest::Namespace)), 1);
    assert_eq!(count(|m| matches!(m, Manifest::ServiceAccount)), 1);
    assert_eq!(count(|m| matches!(m, Manifest::ClusterRoleBinding)), 1);
    assert_eq!(count(|m| matches!(m, Manifest::DaemonSet(_))), 2);
    assert_eq!(
        count(|m| matches!(m, Manifest::Crd)),
        crd::definitions().len()
    );
}

#[test]
fn the_role_grants_what_the_agent_reads_and_writes() {
    let role = manifests()
        .into_iter()
        .find_map(|(_, m)| match m {
            Manifest::ClusterRole(role) => Some(role),
            _ => None,
        })
        .expect("a ClusterRole");
    let grants = |resource: &str, verb: &str| {
        role.rules.iter().flatten().any(|rule| {
            rule.resources.iter().flatten().any(|r| r == resource)
                && rule.verbs.iter().any(|v| v == verb)
        })
    };
    for verb in ["get", "list", "watch"] {
        assert!(grants("pods", verb), "pods {verb}");
        assert!(grants("namespaces", verb), "namespaces {verb}");
    }
    for definition in crd::definitions() {
        let plural = definition.spec.names.plural;
        for verb in ["get", "list", "watch"] {
            assert!(grants(&plural, verb), "{plural} {verb}");
        }
        assert!(
            grants(&format!("{plural}/status"), "patch"),
            "{plural}/status patch"
        );
    }
    assert!(!grants("secrets", "get"), "the agent reads no secrets");
}

#[test]
fn the_daemonsets_run_this_build_on_every_node_with_the_host_pins() {
    let image = format!("enforcer:{}", env!("CARGO_PKG_VERSION"));
    let mut privileged = 0;
    for (what, manifest) in manifests() {
        let Manifest::DaemonSet(ds) = manifest else {
            continue;
        };
        let pod = ds.spec.template.spec.expect("pod spec");
        assert_eq!(pod.host_pid, Some(true), "{what}");
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-node-critical"),
            "{what}"
        );
        let tolerations = pod.tolerations.clone().unwrap_or_default();
        assert!(
            tolerations
                .iter()
                .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
            "{what}: must tolerate every taint"
        );
        let [container] = <[_; 1]>::try_from(pod.containers).expect("one container");
        assert_eq!(container.image.as_deref(), Some(image.as_str()), "{what}");
        assert_eq!(
            container.image_pull_policy.as_deref(),
            Some("IfNotPresent"),
            "{what}"
        );
        let args = container.args.unwrap_or_default();
        assert_eq!(args[..2], ["daemon", "--kubernetes"], "{what}");
        let env = container.env.unwrap_or_default();
        let node = env
            .iter()
            .find(|var| var.name == "NODE_NAME")
            .expect("NODE_NAME");
        let field = node
            .value_from
            .as_ref()
            .and_then(|from| from.field_ref.as_ref());
        assert_eq!(
            field.map(|f| f.field_path.as_str()),
            Some("spec.nodeName"),
            "{what}"
        );
        for (probe, path) in [
            (&container.liveness_probe, "/healthz"),
            (&container.readiness_probe, "/readyz"),
        ] {
            let http = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .expect("http probe");
            assert_eq!(http.path.as_deref(), Some(path), "{what}");
        }

        let volumes: BTreeSet<_> = pod
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|volume| volume.name)
            .collect();
        let mounts = container.volume_mounts.unwrap_or_default();
        let mut paths = BTreeSet::new();
        for mount in &mounts {
            assert!(
                volumes.contains(&mount.name),
                "{what}: no volume {}",
                mount.name
            );
            paths.insert(mount.mount_path.as_str());
        }
        for path in [
            "/sys/fs/bpf",
            "/sys/fs/cgroup",
            "/sys/kernel/security",
            "/sys/kernel/btf",
        ] {
            assert!(paths.contains(path), "{what}: {path} is not mounted");
        }

        let security = container.security_context.expect("securityContext");
        let bpffs = mounts
            .iter()
            .find(|m| m.mount_path == "/sys/fs/bpf")
            .expect("bpffs");
        if security.privileged == Some(true) {
            privileged += 1;
        } else {
            let capabilities = security.capabilities.expect("capabilities");
            assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]), "{what}");
            let added: BTreeSet<_> = capabilities.add.unwrap_or_default().into_iter().collect();
            let wanted: BTreeSet<_> = [
                "BPF",
                "PERFMON",
                "SYS_ADMIN",
                "SYS_RESOURCE",
                "DAC_READ_SEARCH",
                "SYS_PTRACE",
            ]
            .map(String::from)
            .into();
            assert_eq!(added, wanted, "{what}");
            // The apiserver refuses Bidirectional propagation outside privileged containers.
            assert_ne!(
                bpffs.mount_propagation.as_deref(),
                Some("Bidirectional"),
                "{what}"
            );
        }
    }
    assert_eq!(
        privileged, 1,
        "one privileged variant and one capabilities-only"
    );
}
