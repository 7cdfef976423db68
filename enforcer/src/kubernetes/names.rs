//! What the node agent knows about each cgroup it resolved: the namespace, pod and container
//! living there and the policies that apply. The agent writes it; the daemon's event and metric
//! rendering reads it (events then carry `orchestrator.namespace`, `kubernetes.pod.*`,
//! `container.name` and `rule.name`). Keyed by cgroup id, the kernel's name for the cgroup: a
//! workload cannot choose it.
use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

/// The Kubernetes names of one cgroup: a pod's, or one of its containers'.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// Set for a container's cgroup; absent for the pod's own.
    pub container: Option<String>,
    /// The policies whose merge is in force here (`namespace/name` for a `ContainerPolicy`, the
    /// name for a `ClusterContainerPolicy`), in the merge's order.
    pub policies: Vec<String>,
}

/// The shared registry: cheap to clone, safe to read from the event path while the agent
/// updates it.
#[derive(Clone, Debug, Default)]
pub struct Names(Arc<RwLock<HashMap<u64, PodRef>>>);

impl Names {
    pub fn set(&self, cgroup_id: u64, names: PodRef) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cgroup_id, names);
    }

    pub fn remove(&self, cgroup_id: u64) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&cgroup_id);
    }

    /// The names of the cgroup an event came from: its own entry (a container's cgroup), else
    /// the entry of the cgroup whose policy decided (the pod's).
    pub fn of_event(&self, cgroup_id: u64, policy_cgroup_id: u64) -> Option<PodRef> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&cgroup_id)
            .or_else(|| map.get(&policy_cgroup_id))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_takes_its_containers_names_else_its_pods() {
        let names = Names::default();
        let pod = PodRef {
            namespace: "shop".into(),
            pod: "web-1".into(),
            pod_uid: "u".into(),
            container: None,
            policies: vec!["shop/no-mount".into()],
        };
        names.set(10, pod.clone());
        names.set(
            11,
            PodRef {
                container: Some("nginx".into()),
                ..pod.clone()
            },
        );
        assert_eq!(
            names.of_event(11, 10).and_then(|p| p.container).as_deref(),
            Some("nginx")
        );
        assert_eq!(names.of_event(12, 10), Some(pod));
        assert_eq!(names.of_event(12, 13), None);
        names.remove(10);
        assert_eq!(names.len(), 1);
    }
}
