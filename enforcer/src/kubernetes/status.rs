//! The agent's entry in each policy's `status.nodes`, following the rule in
//! [`crd`](super::crd)'s doc: listed only while this node fails to enforce the policy, removed
//! when it is healthy again, never added past [`MAX_NODE_ENTRIES`]. Written with server-side
//! apply under the field manager `enforcer/<node>`, so each agent owns exactly its own entry.
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant, SystemTime},
};

use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{
    crd::{ClusterContainerPolicy, ContainerPolicy, MAX_NODE_ENTRIES, NodeStatus},
    reconcile::Health,
    watch::PolicyMeta,
};

/// How long a wanted cgroup may stay missing before the node reports it: the kubelet and the
/// runtime create cgroups shortly after the API shows the pod or container.
pub const WAIT_GRACE: Duration = Duration::from_secs(10);
/// The longest error text an entry carries.
const MAX_ERROR_LEN: usize = 1024;

/// Writes this node's entries, only when they change.
pub struct Reporter {
    client: Client,
    node: String,
    /// What was last applied per policy key (`None`: no entry), until the watch shows it.
    sent: HashMap<String, Option<NodeStatus>>,
    waiting_since: HashMap<String, Instant>,
}

impl Reporter {
    pub fn new(client: Client, node: &str) -> Self {
        Self {
            client,
            node: node.to_owned(),
            sent: HashMap::new(),
            waiting_since: HashMap::new(),
        }
    }

    /// Brings every policy's entry for this node in line with `health` and the selector errors.
    /// A failed write is retried at the next reconcile.
    pub async fn report(
        &mut self,
        metas: &[PolicyMeta],
        health: &BTreeMap<String, Health>,
        selector_errors: &BTreeMap<String, String>,
    ) {
        let now = Instant::now();
        for meta in metas {
            let empty = Health::default();
            let health = health.get(&meta.key).unwrap_or(&empty);
            let mut errors: Vec<String> = health.errors.iter().cloned().collect();
            errors.extend(selector_errors.get(&meta.key).cloned());
            if health.waiting.is_empty() {
                self.waiting_since.remove(&meta.key);
            } else {
                let since = *self.waiting_since.entry(meta.key.clone()).or_insert(now);
                if now.duration_since(since) >= WAIT_GRACE {
                    errors.extend(health.waiting.iter().cloned());
                }
            }
            let wanted = (!errors.is_empty()).then(|| NodeStatus {
                node: self.node.clone(),
                observed_generation: meta.generation,
                pods: health.pods,
                containers: health.containers,
                error: Some(bounded(&errors.join("; "))),
                last_transition_time: None,
            });
            let listed = meta.listed.clone().map(|entry| NodeStatus {
                last_transition_time: None,
                ..entry
            });
            if listed == wanted {
                self.sent.remove(&meta.key);
                continue;
            }
            if self.sent.get(&meta.key) == Some(&wanted) {
                continue;
            }
            if wanted.is_some() && listed.is_none() && meta.others >= MAX_NODE_ENTRIES {
                eprintln!(
                    "enforcer: kubernetes: policy {} fails on this node, not listed in its status ({MAX_NODE_ENTRIES} nodes are): {}",
                    meta.key,
                    errors.join("; ")
                );
                self.sent.insert(meta.key.clone(), wanted);
                continue;
            }
            match self.apply(meta, wanted.clone()).await {
                Ok(()) => {
                    match &wanted {
                        Some(entry) => eprintln!(
                            "enforcer: kubernetes: policy {} not fully enforced here: {}",
                            meta.key,
                            entry.error.as_deref().unwrap_or_default()
                        ),
                        None => eprintln!(
                            "enforcer: kubernetes: policy {} enforced here again",
                            meta.key
                        ),
                    }
                    self.sent.insert(meta.key.clone(), wanted);
                }
                Err(err) => eprintln!(
                    "enforcer: kubernetes: cannot write the status of policy {} (retrying at the next change): {err}",
                    meta.key
                ),
            }
        }
        self.sent
            .retain(|key, _| metas.iter().any(|meta| meta.key == *key));
    }

    async fn apply(&self, meta: &PolicyMeta, entry: Option<NodeStatus>) -> kube::Result<()> {
        let manager = format!("enforcer/{}", self.node);
        let patch = match entry {
            Some(entry) => {
                let entry = NodeStatus {
                    last_transition_time: Some(
                        humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                    ),
                    ..entry
                };
                let kind = if meta.namespace.is_some() {
                    "ContainerPolicy"
                } else {
                    "ClusterContainerPolicy"
                };
                Patch::Apply(json!({
                    "apiVersion": "enforcer.dev/v1alpha1",
                    "kind": kind,
                    "metadata": {"name": meta.name},
                    "status": {"nodes": [entry]},
                }))
            }
            // Healthy again: this node's entry goes, by index, tested to be ours (a stale index
            // fails the test and is retried at the next change). Server-side apply cannot do
            // it on 1.20: applying no entry leaves `nodes: null` when it was the last, and the
            // schema refuses null.
            None => {
                let Some(index) = meta.listed_at else {
                    return Ok(());
                };
                let operations = json!([
                    {"op": "test", "path": format!("/status/nodes/{index}/node"), "value": self.node},
                    {"op": "remove", "path": format!("/status/nodes/{index}")},
                ]);
                Patch::Json(serde_json::from_value(operations).map_err(kube::Error::SerdeError)?)
            }
        };
        let params = PatchParams::apply(&manager);
        match &meta.namespace {
            Some(namespace) => {
                Api::<ContainerPolicy>::namespaced(self.client.clone(), namespace)
                    .patch_status(&meta.name, &params, &patch)
                    .await?;
            }
            None => {
                Api::<ClusterContainerPolicy>::all(self.client.clone())
                    .patch_status(&meta.name, &params, &patch)
                    .await?;
            }
        }
        Ok(())
    }
}

/// `text`, cut at [`MAX_ERROR_LEN`] on a character boundary.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_ERROR_LEN {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
