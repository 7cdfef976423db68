//! The reconcile rules on small clusters: placement at pod or container level, the merge,
//! ownership (conflicts, adoption, removal), restarts, missing and ambiguous cgroups, and
//! namespace selectors.
use enforcer_common::{Action, Operation};

use super::*;
use crate::policy::{Arm, Layer};

fn pod(name: &str, app: &str, containers: &[(&str, Option<&str>)]) -> PodView {
    PodView {
        namespace: "shop".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: [("app".to_owned(), app.to_owned())].into(),
        qos: QosClass::BestEffort,
        containers: containers
            .iter()
            .map(|(name, id)| ContainerView {
                name: (*name).into(),
                id: id.and_then(|id| ContainerId::parse(&format!("containerd://{id}"))),
            })
            .collect(),
    }
}

fn policy(name: &str, app: &str, op: Operation, action: Action) -> PolicyView {
    PolicyView {
        key: format!("shop/{name}"),
        namespace: Some("shop".into()),
        namespace_selector: None,
        pod_selector: LabelSelector {
            match_labels: Some([("app".to_owned(), app.to_owned())].into()),
            ..Default::default()
        },
        containers: None,
        selecting: Selecting {
            name: format!("shop/{name}"),
            actions: vec![(op, action)],
            arm: Arm::Exec,
            layer: Layer::Syscall,
        },
    }
}

fn cgroup(id: u64, level: u32) -> Cgroup {
    Cgroup {
        id,
        path: format!("/cg{id}"),
        level,
    }
}

/// Finds every want's cgroup in `ids` (by pod uid or container id), else not yet.
fn look_up(wants: Vec<Want>, ids: &[(&str, u64)]) -> Vec<(Want, Found)> {
    wants
        .into_iter()
        .map(|want| {
            let key = match &want.place {
                Place::Pod { uid, .. } => uid.clone(),
                Place::Container { id, .. } => id.id.clone(),
            };
            let found = ids
                .iter()
                .find(|(name, _)| *name == key)
                .map_or(Found::NotYet, |(_, id)| {
                    Found::At(cgroup(*id, if key.starts_with("uid") { 3 } else { 4 }))
                });
            (want, found)
        })
        .collect()
}

#[test]
fn a_pod_level_policy_goes_on_the_pod_cgroup_only_where_it_selects() {
    let pods = [
        pod("web-1", "web", &[("nginx", Some("aa"))]),
        pod("db-1", "db", &[]),
    ];
    let policies = [policy(
        "no-settime",
        "web",
        Operation::Settime,
        Action::Kill,
    )];
    let (wants, errors) = wants(&pods, &policies, &HashMap::new());
    assert!(errors.is_empty());
    // The pod and its container (for names); nothing for the pod the policy does not select.
    assert_eq!(wants.len(), 2);
    let found = look_up(wants, &[("uid-web-1", 10), ("aa", 11), ("uid-db-1", 20)]);
    let plan = plan(&found, &HashMap::new());
    assert_eq!(plan.set.len(), 1);
    let (target, record) = &plan.set[0];
    assert_eq!(target.id, 10);
    assert_ne!(record.flags & policy_flags::KUBERNETES, 0);
    assert_eq!(record.action(Operation::Settime), Action::Kill);
    assert!(plan.remove.is_empty());
    let names: HashMap<u64, PodRef> = plan.names.into_iter().collect();
    assert_eq!(names[&11].container.as_deref(), Some("nginx"));
    assert_eq!(names[&11].policies, ["shop/no-settime"]);
    assert_eq!(plan.health["shop/no-settime"].pods, 1);
}

#[test]
fn a_pod_is_covered_before_its_containers_start() {
    let pods = [pod("web-1", "web", &[("nginx", None)])];
    let policies = [policy("p", "web", Operation::Mount, Action::Deny)];
    let (wants, _) = wants(&pods, &policies, &HashMap::new());
    let plan = plan(&look_up(wants, &[("uid-web-1", 10)]), &HashMap::new());
    assert_eq!(plan.set.len(), 1);
    assert!(!plan.pending);
}

#[test]
fn a_policy_naming_containers_goes_on_them_merged_with_the_pods() {
    let pods = [pod(
        "web-1",
        "web",
        &[("nginx", Some("aa")), ("log", Some("bb"))],
    )];
    let mut narrowed = policy("nginx-only", "web", Operation::Mount, Action::Deny);
    narrowed.containers = Some(vec!["nginx".into()]);
    let policies = [
        narrowed,
        policy("all", "web", Operation::Settime, Action::Audit),
    ];
    let (wants, _) = wants(&pods, &policies, &HashMap::new());
    let plan = plan(
        &look_up(wants, &[("uid-web-1", 10), ("aa", 11), ("bb", 12)]),
        &HashMap::new(),
    );
    let set: HashMap<u64, Policy> = plan.set.iter().map(|(c, p)| (c.id, *p)).collect();
    assert_eq!(set.len(), 2, "{set:?}");
    assert_eq!(set[&10].action(Operation::Mount), Action::Allow);
    assert_eq!(set[&11].action(Operation::Mount), Action::Deny);
    assert_eq!(set[&11].action(Operation::Settime), Action::Audit);
    assert_eq!(plan.health["shop/nginx-only"].containers, 1);
}

#[test]
fn overlapping_policies_merge_strictest_wins() {
    let pods = [pod("web-1", "web", &[])];
    let policies = [
        policy("a", "web", Operation::Settime, Action::Audit),
        policy("b", "web", Operation::Settime, Action::Kill),
    ];
    let (wants, _) = wants(&pods, &policies, &HashMap::new());
    let plan = plan(&look_up(wants, &[("uid-web-1", 10)]), &HashMap::new());
    assert_eq!(plan.set[0].1.action(Operation::Settime), Action::Kill);
}

#[test]
fn owned_records_nothing_wants_are_removed_others_never() {
    let owned = Policy {
        flags: policy_flags::KUBERNETES,
        ..Policy::default()
    };
    let by_hand = Policy::default();
    let pinned: HashMap<u64, Policy> = [(10, owned), (30, by_hand)].into();
    // The pod is gone (or the policy, or the labels changed): nothing is wanted.
    let plan = plan(&[], &pinned);
    assert_eq!(plan.remove, [10]);
}

#[test]
fn a_record_attached_by_hand_is_a_conflict_not_overwritten() {
    let pods = [pod("web-1", "web", &[])];
    let policies = [policy("p", "web", Operation::Settime, Action::Kill)];
    let (wants, _) = wants(&pods, &policies, &HashMap::new());
    let pinned: HashMap<u64, Policy> = [(10, Policy::default())].into();
    let plan = plan(&look_up(wants, &[("uid-web-1", 10)]), &pinned);
    assert!(plan.set.is_empty() && plan.remove.is_empty());
    let errors = &plan.health["shop/p"].errors;
    assert!(errors.iter().any(|e| e.contains("by hand")), "{errors:?}");
}

#[test]
fn an_adopted_record_that_still_matches_is_kept_as_is() {
    let pods = [pod("web-1", "web", &[])];
    let policies = [policy("p", "web", Operation::Settime, Action::Kill)];
    let (wants, _) = wants(&pods, &policies, &HashMap::new());
    let found = look_up(wants, &[("uid-web-1", 10)]);
    let first = plan(&found, &HashMap::new());
    let pinned: HashMap<u64, Policy> = first.set.iter().map(|(c, p)| (c.id, *p)).collect();
    let again = plan(&found, &pinned);
    assert!(again.set.is_empty() && again.remove.is_empty());
}

#[test]
fn a_restarted_containers_old_cgroup_loses_its_record() {
    let mut narrowed = policy("p", "web", Operation::Mount, Action::Deny);
    narrowed.containers = Some(vec!["nginx".into()]);
    let policies = [narrowed];
    let before = [pod("web-1", "web", &[("nginx", Some("aa"))])];
    let (wants_before, _) = wants(&before, &policies, &HashMap::new());
    let first = plan(
        &look_up(wants_before, &[("uid-web-1", 10), ("aa", 11)]),
        &HashMap::new(),
    );
    let pinned: HashMap<u64, Policy> = first.set.iter().map(|(c, p)| (c.id, *p)).collect();
    let after = [pod("web-1", "web", &[("nginx", Some("bb"))])];
    let (wants_after, _) = wants(&after, &policies, &HashMap::new());
    let second = plan(
        &look_up(wants_after, &[("uid-web-1", 10), ("bb", 12)]),
        &pinned,
    );
    assert_eq!(
        second.set.iter().map(|(c, _)| c.id).collect::<Vec<_>>(),
        [12]
    );
    assert_eq!(second.remove, [11]);
}

#[test]
fn a_missing_cgroup_waits_and_a_failed_lookup_removes_nothing() {
    let pods = [pod("web-1", "web", &[])];
    let policies = [policy("p", "web", Operation::Settime, Action::Kill)];
    let (wants, _) = wants(&pods, &policies, &HashMap::new());
    let owned = Policy {
        flags: policy_flags::KUBERNETES,
        ..Policy::default()
    };
    let pinned: HashMap<u64, Policy> = [(99, owned)].into();
    let waiting = plan(&look_up(wants.clone(), &[]), &HashMap::new());
    assert!(waiting.pending && waiting.set.is_empty());
    assert_eq!(waiting.health["shop/p"].waiting.len(), 1);
    let failed: Vec<(Want, Found)> = wants
        .into_iter()
        .map(|want| (want, Found::Failed("ambiguous".into())))
        .collect();
    let unsure = plan(&failed, &pinned);
    assert!(unsure.remove.is_empty());
    assert_eq!(unsure.health["shop/p"].errors.len(), 1);
}

#[test]
fn a_cluster_policy_follows_namespace_labels() {
    let pods = [pod("web-1", "web", &[])];
    let mut cluster = policy("c", "web", Operation::Settime, Action::Kill);
    cluster.namespace = None;
    cluster.key = "c".into();
    cluster.namespace_selector = Some(LabelSelector {
        match_labels: Some([("team".to_owned(), "a".to_owned())].into()),
        ..Default::default()
    });
    let policies = [cluster];
    let mut namespaces = HashMap::new();
    assert!(wants(&pods, &policies, &namespaces).0.is_empty());
    namespaces.insert(
        "shop".to_owned(),
        [("team".to_owned(), "a".to_owned())].into(),
    );
    assert_eq!(wants(&pods, &policies, &namespaces).0.len(), 1);
}

#[test]
fn a_policy_in_another_namespace_selects_nothing_here() {
    let mut other = pod("web-1", "web", &[]);
    other.namespace = "other".into();
    let policies = [policy("p", "web", Operation::Settime, Action::Kill)];
    assert!(wants(&[other], &policies, &HashMap::new()).0.is_empty());
}
