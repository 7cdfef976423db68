//! The custom resources a cluster states policy with: `ContainerPolicy` (namespaced, `cpol`)
//! binds actions to the pods its `podSelector` picks in its namespace; `ClusterContainerPolicy`
//! (`ccpol`) does the same in every namespace its `namespaceSelector` picks. The Rust types are
//! the schema: `enforcer crds` prints the CRDs generated from them, `cargo xtask crds` writes
//! that text to `deploy/crds.yaml`, and a test fails when the file is stale.
//!
//! The schema is structural with enums, so the apiserver itself refuses an unknown action, arm
//! or layer. Operations are the keys of `actions`, one property per row of
//! [`enforcer_common::OPERATIONS`]: a misspelt key is refused by a client's strict field
//! validation (`kubectl` ≥ 1.25 asks for it by default), pruned by older apiservers (the ACTIONS
//! column then shows what is kept), and a policy whose every key is unknown is refused
//! (`minProperties: 1` is checked after pruning).
//!
//! # Status: bounded, one writer per entry
//!
//! `status.nodes` is a list keyed by `node` (`x-kubernetes-list-type: map`), written by each
//! node's agent with server-side apply under its own field manager (`enforcer/<node>`), so each
//! agent owns exactly its own entry and agents never overwrite each other. The rule:
//!
//! - an agent lists its node only while enforcing this policy's generation failed there (a pod
//!   it could not resolve, a policy it could not compile or store): the entry carries the
//!   generation it tried, the pods and containers it does enforce, and the last error;
//! - when the node is healthy again (or the policy no longer selects anything there) the agent
//!   applies an empty list under its manager, which removes its entry;
//! - an agent does not add an entry when [`MAX_NODE_ENTRIES`] other nodes are listed already: it
//!   reports the error in its own log, events and metrics only (the schema's `maxItems` makes the
//!   apiserver refuse the entry past that bound when two agents race for the last place).
//!
//! So an empty status means no agent has a problem with the policy, the list stays small on a
//! 5,000-node cluster, and a status write happens only when a node's health changes: every agent
//! watches the policies, and a per-node heartbeat would send every write to every node.
use std::{borrow::Cow, collections::BTreeMap, fmt};

use enforcer_common::{OPERATIONS, Operation};
use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{CustomResource, CustomResourceExt};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de, ser::SerializeMap};

/// The API group of both kinds.
#[cfg_attr(not(test), expect(dead_code, reason = "the Kubernetes agent reads it"))]
pub const GROUP: &str = "enforcer.dev";

/// At most this many nodes are listed in a policy's status (see the module's doc).
pub const MAX_NODE_ENTRIES: usize = 100;

/// What a namespaced policy asks for: the pods of its namespace that `podSelector` picks.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "enforcer.dev",
    version = "v1alpha1",
    kind = "ContainerPolicy",
    namespaced,
    shortname = "cpol",
    category = "enforcer",
    status = "PolicyStatus",
    doc = "Syscall policy for the containers of the pods its podSelector picks in its namespace.",
    printcolumn = r#"{"name": "Pods", "type": "string", "description": "The labels the pods must carry", "jsonPath": ".spec.podSelector.matchLabels"}"#,
    printcolumn = r#"{"name": "Actions", "type": "string", "description": "Action per operation", "jsonPath": ".spec.actions"}"#,
    printcolumn = r#"{"name": "Containers", "type": "string", "description": "The containers covered (all when empty)", "jsonPath": ".spec.containers", "priority": 1}"#,
    printcolumn = r#"{"name": "Arm", "type": "string", "jsonPath": ".spec.arm", "priority": 1}"#,
    printcolumn = r#"{"name": "Layer", "type": "string", "jsonPath": ".spec.layer", "priority": 1}"#,
    printcolumn = r#"{"name": "Failing-Node", "type": "string", "description": "A node that could not enforce the policy (status.nodes lists them all)", "jsonPath": ".status.nodes[0].node"}"#,
    printcolumn = r#"{"name": "Error", "type": "string", "description": "That node's last error", "jsonPath": ".status.nodes[0].error", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPolicySpec {
    /// The pods of this namespace the policy covers; an empty selector picks every pod.
    pub pod_selector: LabelSelector,
    /// The containers of those pods it covers, by name; absent: every container of the pod
    /// (the policy then sits on the pod's cgroup, before any container starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<String>>,
    /// What happens when a covered process attempts an operation; operations left out are
    /// allowed.
    pub actions: OperationActions,
    /// When a process becomes subject to the policy.
    #[serde(default)]
    pub arm: PolicyArm,
    /// Which programs act on the policy.
    #[serde(default)]
    pub layer: PolicyLayer,
}

/// What a cluster-wide policy asks for: the pods `podSelector` picks in every namespace
/// `namespaceSelector` picks.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "enforcer.dev",
    version = "v1alpha1",
    kind = "ClusterContainerPolicy",
    shortname = "ccpol",
    category = "enforcer",
    status = "PolicyStatus",
    doc = "Syscall policy for the containers of the pods its selectors pick in any namespace.",
    printcolumn = r#"{"name": "Namespaces", "type": "string", "description": "The labels the namespaces must carry", "jsonPath": ".spec.namespaceSelector.matchLabels"}"#,
    printcolumn = r#"{"name": "Pods", "type": "string", "description": "The labels the pods must carry", "jsonPath": ".spec.podSelector.matchLabels"}"#,
    printcolumn = r#"{"name": "Actions", "type": "string", "description": "Action per operation", "jsonPath": ".spec.actions"}"#,
    printcolumn = r#"{"name": "Containers", "type": "string", "description": "The containers covered (all when empty)", "jsonPath": ".spec.containers", "priority": 1}"#,
    printcolumn = r#"{"name": "Arm", "type": "string", "jsonPath": ".spec.arm", "priority": 1}"#,
    printcolumn = r#"{"name": "Layer", "type": "string", "jsonPath": ".spec.layer", "priority": 1}"#,
    printcolumn = r#"{"name": "Failing-Node", "type": "string", "description": "A node that could not enforce the policy (status.nodes lists them all)", "jsonPath": ".status.nodes[0].node"}"#,
    printcolumn = r#"{"name": "Error", "type": "string", "description": "That node's last error", "jsonPath": ".status.nodes[0].error", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterContainerPolicySpec {
    /// The namespaces the policy covers; absent or empty: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// The pods of those namespaces the policy covers; an empty selector picks every pod.
    pub pod_selector: LabelSelector,
    /// The containers of those pods it covers, by name; absent: every container of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<String>>,
    /// What happens when a covered process attempts an operation; operations left out are
    /// allowed.
    pub actions: OperationActions,
    /// When a process becomes subject to the policy.
    #[serde(default)]
    pub arm: PolicyArm,
    /// Which programs act on the policy.
    #[serde(default)]
    pub layer: PolicyLayer,
}

/// What a policy does when a covered process attempts an operation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    /// Permit and report.
    Audit,
    /// Refuse with EPERM and report.
    Deny,
    /// Kill the caller, refuse and report.
    Kill,
}

impl From<PolicyAction> for enforcer_common::Action {
    fn from(action: PolicyAction) -> Self {
        match action {
            PolicyAction::Audit => Self::Audit,
            PolicyAction::Deny => Self::Deny,
            PolicyAction::Kill => Self::Kill,
        }
    }
}

/// When a covered process becomes subject to the policy (see `enforcer attach --arm`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyArm {
    /// From its first exec in the container: the runtime's setup is not judged.
    #[default]
    Exec,
    /// At once, the runtime's setup included.
    Immediate,
}

impl From<PolicyArm> for crate::policy::Arm {
    fn from(arm: PolicyArm) -> Self {
        match arm {
            PolicyArm::Exec => Self::Exec,
            PolicyArm::Immediate => Self::Immediate,
        }
    }
}

/// Which programs act on the policy (see `enforcer attach --layer`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyLayer {
    /// The BPF LSM hooks.
    #[default]
    Lsm,
    /// The system call boundary only (audit and kill), for kernels without BPF LSM.
    Syscall,
    /// Both: LSM enforcement plus the system call layer's reports.
    Both,
}

impl From<PolicyLayer> for crate::policy::Layer {
    fn from(layer: PolicyLayer) -> Self {
        match layer {
            PolicyLayer::Lsm => Self::Lsm,
            PolicyLayer::Syscall => Self::Syscall,
            PolicyLayer::Both => Self::Both,
        }
    }
}

/// The action per operation (`mount: deny`), in the operations table's order. In YAML a map from
/// operation name to action; its schema has one property per operation, so it follows the
/// table without a hand-kept list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperationActions(pub BTreeMap<Operation, PolicyAction>);

impl OperationActions {
    /// Each operation the policy names, with its action.
    pub fn iter(&self) -> impl Iterator<Item = (Operation, PolicyAction)> + '_ {
        self.0.iter().map(|(op, action)| (*op, *action))
    }
}

impl Serialize for OperationActions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (op, action) in &self.0 {
            map.serialize_entry(op.name(), action)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for OperationActions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = OperationActions;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from operation name to audit, deny or kill")
            }

            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<Self::Value, A::Error> {
                let mut actions = BTreeMap::new();
                while let Some((name, action)) = access.next_entry::<String, PolicyAction>()? {
                    let op = Operation::from_name(&name).ok_or_else(|| {
                        de::Error::custom(format!(
                            "unknown operation {name:?}; one of {}",
                            operation_names().join(", ")
                        ))
                    })?;
                    if actions.insert(op, action).is_some() {
                        return Err(de::Error::custom(format!("operation {name} given twice")));
                    }
                }
                Ok(OperationActions(actions))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl JsonSchema for OperationActions {
    fn schema_name() -> Cow<'static, str> {
        "OperationActions".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let properties: serde_json::Map<String, serde_json::Value> = OPERATIONS
            .iter()
            .map(|spec| {
                let property = serde_json::json!({
                    "type": "string",
                    "enum": ["audit", "deny", "kill"],
                    "description": spec.summary,
                });
                (spec.name.to_owned(), property)
            })
            .collect();
        json_schema!({
            "type": "object",
            "description": "Action per operation (audit, deny or kill); operations left out are allowed.",
            "properties": properties,
            "minProperties": 1,
        })
    }
}

fn operation_names() -> Vec<&'static str> {
    OPERATIONS.iter().map(|spec| spec.name).collect()
}

/// What the agents report about a policy: only the nodes that could not enforce it (see the
/// module's doc for who writes what).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// One entry per node that failed to enforce the policy, each owned by that node's agent.
    // Nullable: when the last owner applies its entry away, server-side apply leaves `null`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["node"],
        "nullable" = true
    ))]
    #[schemars(length(max = MAX_NODE_ENTRIES))]
    pub nodes: Vec<NodeStatus>,
}

/// `null` (what the apiserver stores once every entry is gone) read as no entries.
fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<NodeStatus>, D::Error> {
    Ok(Option::deserialize(deserializer)?.unwrap_or_default())
}

/// One node's report on a policy it could not fully enforce.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The node's name (`spec.nodeName` of its pods).
    pub node: String,
    /// The policy generation the agent tried to enforce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods on the node the policy covers and the agent enforces.
    #[serde(default)]
    pub pods: u32,
    /// Containers on the node the policy covers and the agent enforces.
    #[serde(default)]
    pub containers: u32,
    /// What went wrong, last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the agent wrote the entry (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Both CRDs, in the order `deploy/crds.yaml` holds them.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    vec![ContainerPolicy::crd(), ClusterContainerPolicy::crd()]
}

/// The text of `deploy/crds.yaml`: both CRDs as one YAML stream.
pub fn manifests() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::from(
        "# Generated by `cargo xtask crds` from enforcer/src/kubernetes/crd.rs: do not edit.\n",
    );
    for crd in definitions() {
        out += "---\n";
        out += &serde_yaml_ng::to_string(&crd)?;
    }
    Ok(out)
}

#[cfg(test)]
#[path = "crd_tests.rs"]
mod tests;
