//! The Kubernetes side against a real control plane (etcd and kube-apiserver 1.20 on loopback,
//! built and cached by `cargo xtask k8s`): the manifests the project ships pass the apiserver's
//! own validation and re-apply cleanly, and RBAC holds a ServiceAccount to its ClusterRole.
//! Each test starts a control plane of its own (about 3 s), so the tests share no state.
#[path = "../src/control_plane.rs"]
mod control_plane;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use control_plane::{ControlPlane, NODE, output_ok, text};

/// The manifests under test: what `kubectl apply -f deploy/` applies.
fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn start() -> ControlPlane {
    let plane = ControlPlane::start().unwrap_or_else(|e| panic!("control plane: {e:#}"));
    eprintln!(
        "apiserver ready {:.2} s after etcd started",
        plane.ready_after.as_secs_f64()
    );
    plane
}

/// The YAML documents of every manifest file in `dir`, in file name order.
fn documents(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = fs::read_to_string(f).unwrap();
            text.split("\n---")
                .map(str::to_owned)
                .collect::<Vec<String>>()
        })
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .collect()
}

/// Creates the manifests' Namespaces for real: a server-side dry run does not create them, so
/// the namespaced objects in them would fail as "namespace not found".
fn create_namespaces(plane: &ControlPlane, dir: &Path) {
    let namespaces: Vec<String> = documents(dir)
        .into_iter()
        .filter(|d| d.lines().any(|l| l.trim() == "kind: Namespace"))
        .collect();
    if namespaces.is_empty() {
        return;
    }
    let file =
        std::env::temp_dir().join(format!("host-k8s-namespaces-{}.yaml", std::process::id()));
    fs::write(&file, namespaces.join("\n---\n")).unwrap();
    let applied = plane.kubectl_ok(&["apply", "-f", &file.display().to_string()]);
    let _ = fs::remove_file(&file);
    applied.unwrap_or_else(|e| panic!("creating the manifests' namespaces: {e:#}"));
}

#[test]
fn apiserver_comes_up_and_serves_1_20() {
    let plane = start();
    let version = plane.kubectl_ok(&["version", "-o", "json"]).unwrap();
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert_eq!(
        version["serverVersion"]["gitVersion"], "v1.20.2",
        "{version}"
    );
    let namespaces = plane
        .kubectl_ok(&["get", "namespaces", "-o", "name"])
        .unwrap();
    assert!(namespaces.contains("namespace/kube-system"), "{namespaces}");

    // The first custom object is where an apiserver built with the vendored reflect2 (broken by
    // Go >= 1.18) crashes: serve a CRD, create an object of its kind, see the server answer.
    let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/k8s-manifests/crd.yaml");
    plane
        .kubectl_ok(&["apply", "-f", &crd.display().to_string()])
        .unwrap();
    plane
        .kubectl_ok(&[
            "wait",
            "--for=condition=established",
            "--timeout=30s",
            "crd/containerpolicies.enforcer.example",
        ])
        .unwrap();
    let policy = "apiVersion: enforcer.example/v1alpha1\nkind: ContainerPolicy\n\
                  metadata: {name: web, namespace: default}\n\
                  spec: {podSelector: {matchLabels: {app: web}}, operations: {mount: deny}}\n";
    let out = apply_stdin(&plane, policy);
    assert!(
        out.status.success(),
        "{:?}\n{}",
        text(&out),
        plane.log_tail("apiserver.log")
    );
    let listed = plane
        .kubectl_ok(&["get", "cpol", "-A", "-o", "name"])
        .unwrap();
    assert_eq!(listed.trim(), "containerpolicy.enforcer.example/web");
    // The schema's enum is enforced: a bad action is refused.
    let bad = apply_stdin(&plane, &policy.replace("mount: deny", "mount: maybe"));
    assert!(!bad.status.success());
    assert!(
        text(&bad).1.contains("Unsupported value"),
        "{:?}",
        text(&bad)
    );
}

/// `kubectl apply -f -` of `yaml` as the admin.
fn apply_stdin(plane: &ControlPlane, yaml: &str) -> Output {
    let mut child = plane
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn manifests_pass_a_server_side_dry_run_and_reapply_unchanged() {
    let plane = start();
    let dir = manifests();
    let dir_arg = dir.display().to_string();
    create_namespaces(&plane, &dir);

    let started = Instant::now();
    let dry = plane
        .kubectl_ok(&["apply", "--server-side", "--dry-run=server", "-f", &dir_arg])
        .unwrap_or_else(|e| panic!("server-side dry run of {dir_arg}: {e:#}"));
    eprintln!(
        "server-side dry run in {:.2} s:\n{dry}",
        started.elapsed().as_secs_f64()
    );
    assert!(!dry.trim().is_empty());
    for line in dry.lines() {
        assert!(line.contains("(server dry run)"), "{line}");
    }

    let first = plane.kubectl_ok(&["apply", "-f", &dir_arg]).unwrap();
    eprintln!("first apply:\n{first}");
    let second = plane.kubectl_ok(&["apply", "-f", &dir_arg]).unwrap();
    eprintln!("second apply:\n{second}");
    assert_eq!(second.lines().count(), first.lines().count(), "{second}");
    for line in second.lines() {
        assert!(
            line.ends_with(" unchanged"),
            "the second apply changed something: {line}"
        );
    }
}

#[test]
fn a_service_account_token_is_held_to_its_cluster_role() {
    let plane = start();
    let role = "apiVersion: v1\nkind: Namespace\nmetadata: {name: agent-test}\n---\n\
                apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: agent, namespace: agent-test}\n---\n\
                apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: pod-reader}\n\
                rules: [{apiGroups: [\"\"], resources: [pods], verbs: [get, list, watch]}]\n---\n\
                apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: pod-reader}\n\
                roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pod-reader}\n\
                subjects: [{kind: ServiceAccount, name: agent, namespace: agent-test}]\n";
    let file = std::env::temp_dir().join(format!("host-k8s-rbac-{}.yaml", std::process::id()));
    fs::write(&file, role).unwrap();
    plane
        .kubectl_ok(&["apply", "-f", &file.display().to_string()])
        .unwrap();
    let _ = fs::remove_file(&file);

    let agent = plane
        .service_account_kubeconfig("agent-test", "agent")
        .unwrap_or_else(|e| panic!("TokenRequest: {e:#}"));
    // `-v=6` logs each request's status line, so the test reads the HTTP code itself.
    let status_of = |path: &str| -> String {
        let out = plane
            .kubectl_with(&agent)
            .args(["get", "--raw", path, "-v=6"])
            .output()
            .unwrap();
        let (_, stderr) = text(&out);
        stderr
            .lines()
            .find_map(|l| l.split_once(&format!("{path} "))?.1.split(" in ").next())
            .unwrap_or("(no status line)")
            .to_owned()
    };
    // The authorizer's view of a new binding can lag by a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pods = status_of("/api/v1/pods");
    while pods != "200 OK" && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        pods = status_of("/api/v1/pods");
    }
    assert_eq!(pods, "200 OK", "listing pods with the ServiceAccount token");
    assert_eq!(
        status_of("/api/v1/namespaces/agent-test/secrets"),
        "403 Forbidden",
        "listing secrets with the ServiceAccount token"
    );
    // The kubelet identity may register its own Node, and nothing lets the agent do that.
    let node = format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE}}}\n");
    let file = std::env::temp_dir().join(format!("host-k8s-node-{}.yaml", std::process::id()));
    fs::write(&file, &node).unwrap();
    let file_arg = file.display().to_string();
    let as_agent = output_ok(plane.kubectl_with(&agent).args(["create", "-f", &file_arg]));
    let as_node = output_ok(
        plane
            .kubectl_with(&plane.node)
            .args(["create", "-f", &file_arg]),
    );
    let _ = fs::remove_file(&file);
    assert!(as_agent.is_err(), "the agent created a Node");
    as_node.unwrap_or_else(|e| panic!("the kubelet identity cannot create its Node: {e:#}"));
    // The same identity through kubectl's usual verbs, as the agent's operators would check it.
    let whoami = output_ok(
        plane
            .kubectl_with(&agent)
            .args(["auth", "can-i", "list", "secrets"]),
    );
    assert!(whoami.is_err(), "can-i list secrets said yes");
}
