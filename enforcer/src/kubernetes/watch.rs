//! The agent's view of the cluster: one watcher per kind it needs (the pods bound to its node,
//! both policy kinds, the namespaces' labels), each mirrored into an in-memory store, and the
//! conversion of those objects into what [`reconcile`](super::reconcile) reads. The watchers
//! retry with backoff on their own: an apiserver outage leaves the stores, and so what is
//! enforced, as they were.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Debug,
    hash::Hash,
    sync::Arc,
};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Namespace, Pod};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::{
    crd::{ClusterContainerPolicy, ContainerPolicy, NodeStatus},
    merge::Selecting,
    reconcile::{ContainerView, PodView, PolicyView},
    resolve::{ContainerId, QosClass},
};

/// The annotation a static pod's mirror carries: the uid the kubelet runs the pod under.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The four mirrored kinds.
pub struct Stores {
    pods: Store<Pod>,
    policies: Store<ContainerPolicy>,
    cluster_policies: Store<ClusterContainerPolicy>,
    namespaces: Store<Namespace>,
}

/// A policy as the status writer needs it: where it is, and what its status says of this node.
#[derive(Clone, Debug)]
pub struct PolicyMeta {
    pub key: String,
    pub name: String,
    pub namespace: Option<String>,
    pub generation: Option<i64>,
    /// This node's entry, if the status lists it, and its index in the list.
    pub listed: Option<NodeStatus>,
    pub listed_at: Option<usize>,
    /// How many other nodes the status lists.
    pub others: usize,
}

/// What one reconcile reads.
pub struct Snapshot {
    pub pods: Vec<PodView>,
    pub policies: Vec<PolicyView>,
    pub metas: Vec<PolicyMeta>,
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
}

impl Stores {
    /// Starts the watchers; `changed` is notified on every change they see.
    pub fn start(client: &Client, node: &str, changed: &Arc<Notify>) -> Self {
        let on_node = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        Self {
            pods: follow(Api::all(client.clone()), on_node, changed, "pods"),
            policies: follow(
                Api::all(client.clone()),
                watcher::Config::default(),
                changed,
                "containerpolicies",
            ),
            cluster_policies: follow(
                Api::all(client.clone()),
                watcher::Config::default(),
                changed,
                "clustercontainerpolicies",
            ),
            namespaces: follow(
                Api::all(client.clone()),
                watcher::Config::default(),
                changed,
                "namespaces",
            ),
        }
    }

    /// Waits until every watcher has completed its first list: before that, a missing object
    /// may only be one not listed yet, and the agent must not remove anything on its account.
    pub async fn ready(&self) -> Result<()> {
        let lost = "a watcher stopped before its first list";
        self.pods.wait_until_ready().await.context(lost)?;
        self.policies.wait_until_ready().await.context(lost)?;
        self.cluster_policies
            .wait_until_ready()
            .await
            .context(lost)?;
        self.namespaces.wait_until_ready().await.context(lost)?;
        Ok(())
    }

    pub fn snapshot(&self, node: &str) -> Snapshot {
        let mut policies = Vec::new();
        let mut metas = Vec::new();
        for policy in self.policies.state() {
            let namespace = policy.namespace().unwrap_or_default();
            let key = format!("{namespace}/{}", policy.name_any());
            let spec = &policy.spec;
            policies.push(PolicyView {
                key: key.clone(),
                namespace: Some(namespace.clone()),
                namespace_selector: None,
                pod_selector: spec.pod_selector.clone(),
                containers: spec.containers.clone(),
                selecting: Selecting {
                    name: key.clone(),
                    actions: spec.actions.iter().map(|(op, a)| (op, a.into())).collect(),
                    arm: spec.arm.into(),
                    layer: spec.layer.into(),
                },
            });
            metas.push(meta(
                &*policy,
                key,
                Some(namespace),
                policy.status.as_ref(),
                node,
            ));
        }
        for policy in self.cluster_policies.state() {
            let key = policy.name_any();
            let spec = &policy.spec;
            policies.push(PolicyView {
                key: key.clone(),
                namespace: None,
                namespace_selector: spec.namespace_selector.clone(),
                pod_selector: spec.pod_selector.clone(),
                containers: spec.containers.clone(),
                selecting: Selecting {
                    name: key.clone(),
                    actions: spec.actions.iter().map(|(op, a)| (op, a.into())).collect(),
                    arm: spec.arm.into(),
                    layer: spec.layer.into(),
                },
            });
            metas.push(meta(&*policy, key, None, policy.status.as_ref(), node));
        }
        let namespaces = self
            .namespaces
            .state()
            .iter()
            .map(|namespace| (namespace.name_any(), namespace.labels().clone()))
            .collect();
        let pods = self
            .pods
            .state()
            .iter()
            .filter_map(|pod| pod_view(pod))
            .collect();
        Snapshot {
            pods,
            policies,
            metas,
            namespaces,
        }
    }
}

fn meta<K: Resource>(
    policy: &K,
    key: String,
    namespace: Option<String>,
    status: Option<&super::crd::PolicyStatus>,
    node: &str,
) -> PolicyMeta {
    let nodes = status
        .map(|status| status.nodes.as_slice())
        .unwrap_or_default();
    PolicyMeta {
        key,
        name: policy.meta().name.clone().unwrap_or_default(),
        namespace,
        generation: policy.meta().generation,
        listed: nodes.iter().find(|entry| entry.node == node).cloned(),
        listed_at: nodes.iter().position(|entry| entry.node == node),
        others: nodes.iter().filter(|entry| entry.node != node).count(),
    }
}

/// Mirrors one kind into a store, notifying `changed` on every event; errors are logged and
/// the watcher retries with backoff.
fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: &Arc<Notify>,
    kind: &'static str,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let changed = Arc::clone(changed);
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|object: &mut K| object.meta_mut().managed_fields = None)
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if std::mem::take(&mut failing) {
                        eprintln!("enforcer: kubernetes: watching {kind} again");
                    }
                    changed.notify_one();
                }
                Err(err) => {
                    if !std::mem::replace(&mut failing, true) {
                        eprintln!(
                            "enforcer: kubernetes: cannot watch {kind} (retrying; what is enforced stays): {err}"
                        );
                    }
                }
            }
        }
    });
    reader
}

/// What reconciling needs of a pod; `None` for a pod that holds no cgroup any more (finished)
/// or cannot be placed (no QoS class yet).
fn pod_view(pod: &Pod) -> Option<PodView> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let qos = QosClass::parse(status.qos_class.as_deref()?)?;
    let uid = pod
        .annotations()
        .get(MIRROR_ANNOTATION)
        .cloned()
        .or_else(|| pod.uid())?;
    let statuses = [
        status.init_container_statuses.as_deref(),
        status.container_statuses.as_deref(),
        status.ephemeral_container_statuses.as_deref(),
    ];
    let containers = statuses
        .into_iter()
        .flatten()
        .flatten()
        .map(|container| ContainerView {
            name: container.name.clone(),
            id: live_id(container),
        })
        .collect();
    Some(PodView {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid,
        labels: pod.labels().clone(),
        qos,
        containers,
    })
}

/// The id of a container that has a cgroup: created and not terminated.
fn live_id(container: &ContainerStatus) -> Option<ContainerId> {
    let terminated = container
        .state
        .as_ref()
        .is_some_and(|state| state.terminated.is_some());
    if terminated {
        return None;
    }
    ContainerId::parse(container.container_id.as_deref()?)
}
