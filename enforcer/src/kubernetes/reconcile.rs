//! What the agent should have in the kernel, computed without touching it: from the pods on
//! this node, the policies, the namespaces' labels and what the cgroup tree holds, to a plan of
//! records to set and remove. Pure, so every rule below is unit-tested without a cluster.
//!
//! The rules:
//! - a policy without `containers` sits on the pod's cgroup, from the moment the pod's cgroup
//!   exists (before its containers start: exec arming keeps the runtime's setup working);
//! - a policy naming containers sits on those containers' cgroups, merged there with the pod-level
//!   policies of the pod (the deeper record is the one the kernel consults);
//! - overlapping policies merge strictest-wins ([`merge`]);
//! - only records carrying [`policy_flags::KUBERNETES`] are the agent's: another record on a
//!   wanted cgroup is a conflict, reported and left alone;
//! - an owned record that nothing wants any more is removed (pod deleted, policy deleted or
//!   changed, labels changed, a restarted container's old cgroup), unless some cgroup could not
//!   be looked up: the agent removes nothing while it is unsure.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use enforcer_common::{Policy, policy_flags};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{
    merge::{self, Selecting},
    names::PodRef,
    resolve::{ContainerId, QosClass},
    selector,
};
use crate::cgroup::Cgroup;

/// A pod bound to this node, as reconciling needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    /// The uid its cgroup is named after (a static pod's mirror: the config's uid).
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub qos: QosClass,
    pub containers: Vec<ContainerView>,
}

/// One container of a pod: its id once the runtime created it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub id: Option<ContainerId>,
}

/// A `ContainerPolicy` (`namespace` set) or `ClusterContainerPolicy`.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyView {
    /// The name events and status show: `namespace/name`, or the cluster policy's name.
    pub key: String,
    pub namespace: Option<String>,
    /// Cluster policies only; absent picks every namespace.
    pub namespace_selector: Option<LabelSelector>,
    pub pod_selector: LabelSelector,
    pub containers: Option<Vec<String>>,
    pub selecting: Selecting,
}

/// Where a wanted record goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// The pod's cgroup, by the pod's uid.
    Pod { uid: String, qos: QosClass },
    /// A container's cgroup, below its pod's.
    Container {
        pod_uid: String,
        qos: QosClass,
        id: ContainerId,
    },
}

/// A cgroup the agent wants to know, and the policies that want a record there (none: only its
/// names are wanted, for events from a container under a pod-level record).
#[derive(Clone, Debug, PartialEq)]
pub struct Want {
    pub place: Place,
    pub names: PodRef,
    pub selecting: Vec<Selecting>,
}

/// What the cgroup tree said about a [`Want`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    At(Cgroup),
    /// Not there (yet): retried a little later, nothing attached meanwhile.
    NotYet,
    /// The lookup failed or was ambiguous: nothing is removed while any lookup says this.
    Failed(String),
}

/// What one reconcile does and reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Records to write (new or changed), with [`policy_flags::KUBERNETES`] set.
    pub set: Vec<(Cgroup, Policy)>,
    /// Owned records to remove, by cgroup id.
    pub remove: Vec<u64>,
    /// The names of every found cgroup.
    pub names: Vec<(u64, PodRef)>,
    /// Per policy key: the pods and containers it is enforced on here, and its problems.
    pub health: BTreeMap<String, Health>,
    /// Some wanted cgroup was not found: reconcile again soon.
    pub pending: bool,
}

/// One policy's standing on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub pods: u32,
    pub containers: u32,
    /// Problems, sorted and deduplicated; empty when the node enforces the policy fully.
    pub errors: BTreeSet<String>,
    /// Cgroups not found yet (the caller reports them only once they stay missing).
    pub waiting: BTreeSet<String>,
}

/// The cgroups to look up and the records wanted there; policies whose selector is malformed
/// get an entry in the returned errors.
pub fn wants(
    pods: &[PodView],
    policies: &[PolicyView],
    namespaces: &HashMap<String, BTreeMap<String, String>>,
) -> (Vec<Want>, BTreeMap<String, String>) {
    let mut errors = BTreeMap::new();
    let mut out = Vec::new();
    for pod in pods {
        let selected: Vec<&PolicyView> = policies
            .iter()
            .filter(|policy| match selects(policy, pod, namespaces) {
                Ok(picked) => picked,
                Err(err) => {
                    errors.insert(policy.key.clone(), err);
                    false
                }
            })
            .collect();
        if selected.is_empty() {
            continue;
        }
        let pod_level: Vec<Selecting> = selected
            .iter()
            .filter(|policy| policy.containers.is_none())
            .map(|policy| policy.selecting.clone())
            .collect();
        let pod_names = PodRef {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            container: None,
            policies: sorted_names(&pod_level),
        };
        out.push(Want {
            place: Place::Pod {
                uid: pod.uid.clone(),
                qos: pod.qos,
            },
            names: pod_names.clone(),
            selecting: pod_level.clone(),
        });
        for container in &pod.containers {
            let Some(id) = &container.id else { continue };
            let narrowed: Vec<Selecting> = selected
                .iter()
                .filter(|policy| {
                    policy
                        .containers
                        .as_ref()
                        .is_some_and(|names| names.contains(&container.name))
                })
                .map(|policy| policy.selecting.clone())
                .collect();
            let selecting = if narrowed.is_empty() {
                Vec::new()
            } else {
                narrowed
                    .into_iter()
                    .chain(pod_level.iter().cloned())
                    .collect()
            };
            let names = PodRef {
                container: Some(container.name.clone()),
                policies: if selecting.is_empty() {
                    pod_names.policies.clone()
                } else {
                    sorted_names(&selecting)
                },
                ..pod_names.clone()
            };
            out.push(Want {
                place: Place::Container {
                    pod_uid: pod.uid.clone(),
                    qos: pod.qos,
                    id: id.clone(),
                },
                names,
                selecting,
            });
        }
    }
    (out, errors)
}

fn selects(
    policy: &PolicyView,
    pod: &PodView,
    namespaces: &HashMap<String, BTreeMap<String, String>>,
) -> Result<bool, String> {
    match &policy.namespace {
        Some(namespace) if *namespace != pod.namespace => return Ok(false),
        Some(_) => {}
        None => {
            if let Some(namespace_selector) = &policy.namespace_selector {
                // A namespace not seen yet has no labels as far as the agent knows.
                let empty = BTreeMap::new();
                let labels = namespaces.get(&pod.namespace).unwrap_or(&empty);
                if !selector::matches(namespace_selector, labels)? {
                    return Ok(false);
                }
            }
        }
    }
    selector::matches(&policy.pod_selector, &pod.labels)
}

fn sorted_names(selecting: &[Selecting]) -> Vec<String> {
    let mut names: Vec<String> = selecting.iter().map(|s| s.name.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// The plan from the looked-up wants and what the kernel holds now (`pinned`: every record, by
/// cgroup id).
pub fn plan(found: &[(Want, Found)], pinned: &HashMap<u64, Policy>) -> Plan {
    let mut plan = Plan::default();
    let mut wanted_ids = BTreeSet::new();
    let mut unsure = false;
    for (want, found) in found {
        let shown = shown(want);
        let cgroup = match found {
            Found::At(cgroup) => cgroup,
            Found::NotYet => {
                plan.pending |= !want.selecting.is_empty();
                for selecting in &want.selecting {
                    health(&mut plan, &selecting.name)
                        .waiting
                        .insert(format!("{shown}: cgroup not found"));
                }
                continue;
            }
            Found::Failed(err) => {
                unsure = true;
                for selecting in &want.selecting {
                    health(&mut plan, &selecting.name)
                        .errors
                        .insert(format!("{shown}: {err}"));
                }
                continue;
            }
        };
        plan.names.push((cgroup.id, want.names.clone()));
        let merged = match merge::merge(&want.selecting, cgroup.level) {
            Ok(Some(merged)) => merged,
            Ok(None) => continue,
            Err(err) => {
                for selecting in &want.selecting {
                    health(&mut plan, &selecting.name)
                        .errors
                        .insert(format!("{shown}: {err}"));
                }
                continue;
            }
        };
        let mut record = merged.policy;
        record.flags |= policy_flags::KUBERNETES;
        match pinned.get(&cgroup.id) {
            Some(current) if current.flags & policy_flags::KUBERNETES == 0 => {
                for selecting in &want.selecting {
                    health(&mut plan, &selecting.name).errors.insert(format!(
                        "{shown}: {} holds a policy attached by hand; left alone",
                        cgroup.path
                    ));
                }
                continue;
            }
            Some(current) if *current == record => {}
            _ => plan.set.push((cgroup.clone(), record)),
        }
        wanted_ids.insert(cgroup.id);
        for selecting in &want.selecting {
            let entry = health(&mut plan, &selecting.name);
            match want.place {
                Place::Pod { .. } => entry.pods += 1,
                Place::Container { .. } => entry.containers += 1,
            }
        }
    }
    if !unsure {
        let mut owned: Vec<u64> = pinned
            .iter()
            .filter(|(id, policy)| {
                policy.flags & policy_flags::KUBERNETES != 0 && !wanted_ids.contains(id)
            })
            .map(|(id, _)| *id)
            .collect();
        owned.sort_unstable();
        plan.remove = owned;
    }
    plan
}

fn health<'a>(plan: &'a mut Plan, key: &str) -> &'a mut Health {
    plan.health.entry(key.to_owned()).or_default()
}

/// The pod or container a want is about, for messages.
fn shown(want: &Want) -> String {
    let pod = format!("{}/{}", want.names.namespace, want.names.pod);
    match &want.names.container {
        Some(container) => format!("{pod} container {container}"),
        None => pod,
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
