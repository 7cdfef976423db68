//! The node agent (`enforcer daemon --kubernetes`) against a real control plane (etcd and
//! kube-apiserver 1.20 on loopback, from `cargo xtask k8s`), with the kernel as the judge: the
//! agent runs with the shipped ServiceAccount's RBAC, the test plays the kubelet (pods bound to
//! the test node, their cgroups made on this host's cgroup2 tree under `kubepods/`), and the
//! policies are `layer: syscall`, the layer this host's kernel loads without BPF LSM.
//!
//! The agent runs as `daemon --kubernetes --layer syscall` (the daemon without LSM programs, as
//! on a kernel without BPF LSM) in a mount namespace with a fresh bpffs on /sys/fs/bpf and a tmpfs on /run, so
//! its pins and locks are its own; the syscall layer's programs it attaches run machine-wide but
//! act only on the test's cgroups.
#[path = "../src/control_plane.rs"]
mod control_plane;

mod common;

use std::{
    env, fs,
    io::{BufRead, BufReader},
    os::unix::{fs::MetadataExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use control_plane::{ControlPlane, NODE, output_ok};
use serde_json::Value;

use common::{cgroup_root, enforcer_bin};

const WAIT: Duration = Duration::from_secs(30);
const SETTIMEOFDAY: &str = "164";

/// A mount namespace with its own bpffs and /run, kept alive by a `sleep`.
struct Namespace {
    holder: Child,
}

impl Namespace {
    fn new() -> Self {
        let script = "while mountpoint -q /sys/fs/bpf; do umount /sys/fs/bpf || exit 1; done; \
                      mount -t bpf bpf /sys/fs/bpf && mount -t tmpfs tmpfs /run || exit 1; \
                      echo ready; exec sleep infinity";
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read holder");
        assert_eq!(line.trim(), "ready", "the namespace was not set up");
        Self { holder }
    }

    fn enforcer(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(["--target", &self.holder.id().to_string(), "--mount", "--"])
            .arg(enforcer_bin())
            .args(args);
        command
    }

    /// The records `enforcer list --json` shows, by cgroup id.
    fn listed(&self) -> Vec<(u64, Value)> {
        let out = output_ok(&mut self.enforcer(&["list", "--json"])).expect("list");
        let list: Value = serde_json::from_str(&out).expect("list JSON");
        list["policies"]
            .as_array()
            .expect("policies")
            .iter()
            .map(|p| (p["cgroup_id"].as_u64().expect("id"), p.clone()))
            .collect()
    }

    fn record(&self, id: u64) -> Option<Value> {
        self.listed()
            .into_iter()
            .find(|(listed, _)| *listed == id)
            .map(|(_, p)| p)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The agent, its stderr in a file (printed when the test fails) and its event stream (stdout,
/// JSON lines) in another.
struct Agent {
    child: Child,
    log: PathBuf,
    events: PathBuf,
}

impl Agent {
    fn start(ns: &Namespace, kubeconfig: &Path, log: PathBuf) -> Self {
        let file = fs::File::create(&log).expect("agent log");
        let events = log.with_extension("events");
        let stdout = fs::File::create(&events).expect("agent events");
        let child = ns
            .enforcer(&[
                "daemon",
                "--layer",
                "syscall",
                "--kubernetes",
                "--kubeconfig",
                kubeconfig.to_str().expect("utf-8"),
                "--node-name",
                NODE,
            ])
            .stdout(stdout)
            .stderr(file)
            .spawn()
            .expect("start the agent");
        Self { child, log, events }
    }

    /// The events the daemon wrote so far.
    fn events(&self) -> Vec<Value> {
        fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Kills the agent outright, as a node's OOM killer or an upgrade would.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("--- agent log\n{}", self.log());
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// Cgroup directories the test made, removed (deepest first) on drop.
#[derive(Default)]
struct Cgroups(Vec<PathBuf>);

impl Cgroups {
    /// Makes `relative` and any missing parent; its cgroup id.
    fn make(&mut self, relative: &str) -> u64 {
        let mut path = cgroup_root();
        for part in relative.split('/') {
            path.push(part);
            if !path.exists() {
                fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
                self.0.push(path.clone());
            }
        }
        fs::metadata(&path).expect("stat").ino()
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for path in self.0.iter().rev() {
            let _ = fs::remove_dir(path);
        }
    }
}

fn wait_until(what: &str, agent: &Agent, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}\n--- agent log\n{}",
            agent.log()
        );
        thread::sleep(Duration::from_millis(250));
    }
}

fn apply(plane: &ControlPlane, yaml: &str) {
    let file = env::temp_dir().join(format!("host-k8s-agent-{}.yaml", std::process::id()));
    fs::write(&file, yaml).expect("write manifest");
    let applied = plane.kubectl_ok(&["apply", "-f", file.to_str().expect("utf-8")]);
    let _ = fs::remove_file(&file);
    applied.unwrap_or_else(|e| panic!("kubectl apply: {e:#}\n{yaml}"));
}

/// Creates a BestEffort pod bound to the test node; its uid.
fn pod(plane: &ControlPlane, name: &str, app: &str) -> String {
    apply(
        plane,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}\n\
             spec: {{nodeName: {NODE}, containers: [{{name: main, image: test}}]}}\n"
        ),
    );
    plane
        .kubectl_ok(&[
            "get",
            "pod",
            name,
            "-n",
            "shop",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .expect("pod uid")
}

/// Runs settimeofday(NULL, NULL) (changes nothing) in the cgroup; whether it was killed.
fn settime_killed(cgroup: &str) -> bool {
    let probe = env!("CARGO_BIN_EXE_probe");
    let path = cgroup_root().join(cgroup);
    let status = Command::new(probe)
        .args([
            "--cgroup",
            path.to_str().expect("utf-8"),
            "raw",
            SETTIMEOFDAY,
            "0",
            "0",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("run probe");
    status.signal() == Some(libc::SIGKILL)
}

/// Reports the pod's container `main` running as `containerd://<id>`, as the kubelet of the
/// test node would (its identity, through the status subresource).
fn set_container(plane: &ControlPlane, pod: &str, id: &str) {
    let out = output_ok(
        plane
            .kubectl_with(&plane.node)
            .args(["get", "pod", pod, "-n", "shop", "-o", "json"]),
    )
    .expect("get pod");
    let mut object: Value = serde_json::from_str(&out).expect("pod JSON");
    object["status"]["containerStatuses"] = serde_json::json!([{
        "name": "main",
        "containerID": format!("containerd://{id}"),
        "image": "test",
        "imageID": "",
        "ready": true,
        "restartCount": 0,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
    }]);
    let file = env::temp_dir().join(format!("host-k8s-agent-status-{}.json", std::process::id()));
    fs::write(&file, object.to_string()).expect("write status");
    let replaced = output_ok(plane.kubectl_with(&plane.node).args([
        "replace",
        "--raw",
        &format!("/api/v1/namespaces/shop/pods/{pod}/status"),
        "-f",
        file.to_str().expect("utf-8"),
    ]));
    let _ = fs::remove_file(&file);
    replaced.unwrap_or_else(|e| panic!("the kubelet's status update: {e:#}"));
}

fn node_status(plane: &ControlPlane, policy: &str) -> String {
    plane
        .kubectl_ok(&[
            "get",
            "cpol",
            policy,
            "-n",
            "shop",
            "-o",
            "jsonpath={.status.nodes}",
        ])
        .unwrap_or_default()
}

const POLICY: &str = "apiVersion: enforcer.dev/v1alpha1\nkind: ContainerPolicy\n\
    metadata: {name: no-settime, namespace: shop}\n\
    spec: {podSelector: {matchLabels: {app: web}}, actions: {settime: kill}, layer: syscall}\n";

#[test]
fn the_agent_follows_pods_and_policies_and_never_touches_a_hand_attached_policy() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the node agent's host test needs root");
        return;
    }
    let mut plane = ControlPlane::start().unwrap_or_else(|e| panic!("control plane: {e:#}"));
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for file in ["crds.yaml", "enforcer.yaml"] {
        plane
            .kubectl_ok(&["apply", "-f", deploy.join(file).to_str().expect("utf-8")])
            .unwrap_or_else(|e| panic!("applying deploy/{file}: {e:#}"));
    }
    plane
        .kubectl_ok(&[
            "wait",
            "--for",
            "condition=established",
            "crd",
            "--all",
            "--timeout=30s",
        ])
        .expect("CRDs established");
    apply(
        &plane,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    );
    let web_uid = pod(&plane, "web", "web");
    let db_uid = pod(&plane, "db", "db");
    pod(&plane, "lost", "web");
    let hand_uid = pod(&plane, "hand", "web");
    let kubeconfig = plane
        .service_account_kubeconfig("enforcer", "enforcer")
        .expect("the agent's ServiceAccount token");

    let mut cgroups = Cgroups::default();
    let web_dir = format!("kubepods/besteffort/pod{web_uid}");
    let web = cgroups.make(&web_dir);
    let db = cgroups.make(&format!("kubepods/besteffort/pod{db_uid}"));
    let hand_dir = format!("kubepods/besteffort/pod{hand_uid}");
    let hand = cgroups.make(&hand_dir);
    // `lost` gets no cgroup: its node must show in the policy's status.

    let ns = Namespace::new();
    // A policy a person attached by hand on a pod's cgroup before the agent came.
    let hand_path = cgroup_root().join(&hand_dir);
    output_ok(&mut ns.enforcer(&[
        "attach",
        "--cgroup",
        hand_path.to_str().expect("utf-8"),
        "--layer",
        "syscall",
        "--audit",
        "settime",
    ]))
    .expect("attach by hand");

    let log_dir = env::temp_dir();
    let mut agent = Agent::start(
        &ns,
        &kubeconfig,
        log_dir.join(format!("host-k8s-agent-{}.log", std::process::id())),
    );
    apply(&plane, POLICY);
    wait_until("the web pod's cgroup has the policy", &agent, || {
        ns.record(web).is_some()
    });
    let record = ns.record(web).expect("web record");
    assert_eq!(record["attached_by"], "kubernetes", "{record}");
    assert_eq!(
        record["operations"]["settime"]["action"], "kill",
        "{record}"
    );
    assert!(ns.record(db).is_none(), "the db pod is not selected");
    assert!(
        settime_killed(&web_dir),
        "settimeofday in the web pod was not killed"
    );
    assert!(!settime_killed(&format!("kubepods/besteffort/pod{db_uid}")));
    // The daemon's event names the namespace, the pod and the policy, not only the cgroup.
    wait_until("the kill's event with the pod's names", &agent, || {
        agent.events().iter().any(|e| {
            e["kubernetes"]["pod"]["name"] == "web"
                && e["orchestrator"]["namespace"] == "shop"
                && e["kubernetes"]["pod"]["uid"] == web_uid.as_str()
                && e["rule"]["name"]
                    .as_str()
                    .is_some_and(|rule| rule.contains("no-settime"))
        })
    });
    let hand_record = ns.record(hand).expect("the hand-attached record");
    assert_eq!(hand_record["attached_by"], "manual", "{hand_record}");
    assert_eq!(hand_record["operations"]["settime"]["action"], "audit");

    // The lost pod's cgroup never appears, and the hand-attached one conflicts: the node shows.
    // The conflict shows at once, the missing cgroup after the agent's grace.
    wait_until("the policy's status lists the node", &agent, || {
        node_status(&plane, "no-settime").contains("cgroup not found")
    });
    let status = node_status(&plane, "no-settime");
    assert!(status.contains("cgroup not found"), "{status}");
    assert!(status.contains("by hand"), "{status}");

    // Killed, the agent leaves the policy in force; restarted, it adopts the record.
    agent.kill();
    assert!(settime_killed(&web_dir), "the policy went with the agent");
    let agent = Agent::start(
        &ns,
        &kubeconfig,
        log_dir.join(format!("host-k8s-agent-{}-2.log", std::process::id())),
    );
    wait_until("the restarted agent watches", &agent, || {
        agent.log().contains("watching the pods")
    });
    thread::sleep(Duration::from_secs(1));
    assert!(
        ns.record(web).is_some(),
        "the restarted agent dropped its record"
    );
    assert!(
        !agent.log().contains("attached /"),
        "the record was rewritten, not adopted"
    );

    // An apiserver outage changes nothing enforced; the agent resyncs when it returns (the
    // status clearing below needs the watches back).
    plane
        .restart_apiserver(Duration::from_secs(4))
        .expect("restart the apiserver");
    assert!(ns.record(web).is_some(), "the outage removed a record");
    assert!(settime_killed(&web_dir), "the outage stopped enforcement");
    assert!(
        agent.log().contains("cannot watch"),
        "the agent did not notice the outage:\n{}",
        agent.log()
    );

    // The lost pod goes away and the hand-attached one stops matching: the status clears.
    plane
        .kubectl_ok(&[
            "delete",
            "pod",
            "lost",
            "-n",
            "shop",
            "--grace-period=0",
            "--force",
        ])
        .expect("delete lost");
    plane
        .kubectl_ok(&[
            "label",
            "pod",
            "hand",
            "-n",
            "shop",
            "app=other",
            "--overwrite",
        ])
        .expect("relabel hand");
    wait_until("the node leaves the policy's status", &agent, || {
        !node_status(&plane, "no-settime").contains(NODE)
    });

    // A policy naming a container sits on that container's cgroup, not the pod's; when the
    // container restarts (a new id, a new cgroup) the record follows it.
    let api_uid = pod(&plane, "api", "api");
    let api_dir = format!("kubepods/besteffort/pod{api_uid}");
    let api = cgroups.make(&api_dir);
    let first_id = format!("{:064x}", 0xa1_u32);
    let first_dir = format!("{api_dir}/{first_id}");
    let first = cgroups.make(&first_dir);
    apply(
        &plane,
        "apiVersion: enforcer.dev/v1alpha1\nkind: ContainerPolicy\n\
         metadata: {name: api-main, namespace: shop}\n\
         spec: {podSelector: {matchLabels: {app: api}}, containers: [main], actions: {settime: kill}, layer: syscall}\n",
    );
    set_container(&plane, "api", &first_id);
    wait_until("the api container's cgroup has the policy", &agent, || {
        ns.record(first).is_some()
    });
    assert!(
        ns.record(api).is_none(),
        "a container policy went on the pod's cgroup"
    );
    assert!(
        settime_killed(&first_dir),
        "settimeofday in the container was not killed"
    );
    let second_id = format!("{:064x}", 0xb2_u32);
    let second_dir = format!("{api_dir}/{second_id}");
    let second = cgroups.make(&second_dir);
    set_container(&plane, "api", &second_id);
    wait_until(
        "the restarted container's cgroup has the policy",
        &agent,
        || ns.record(second).is_some() && ns.record(first).is_none(),
    );

    // Deleting the policy frees the pod; the hand-attached record stays.
    plane
        .kubectl_ok(&["delete", "cpol", "no-settime", "-n", "shop"])
        .expect("delete policy");
    wait_until("the web pod's record is removed", &agent, || {
        ns.record(web).is_none()
    });
    assert!(
        !settime_killed(&web_dir),
        "settimeofday still killed after the policy went"
    );
    assert!(
        ns.record(hand).is_some(),
        "the agent removed a hand-attached record"
    );
}
