//! The CRDs' schema refuses what the agent could not enforce, follows the operations table, and
//! `deploy/crds.yaml` is the text they generate.
use serde_json::Value;

use super::*;

fn schema(crd: &CustomResourceDefinition) -> Value {
    let version = &crd.spec.versions[0];
    let schema = version.schema.as_ref().expect("schema");
    serde_json::to_value(schema.open_api_v3_schema.as_ref().expect("openAPIV3Schema"))
        .expect("schema as JSON")
}

#[test]
fn every_operation_of_the_table_is_a_property_with_the_action_enum() {
    for crd in definitions() {
        let schema = schema(&crd);
        let actions = &schema["properties"]["spec"]["properties"]["actions"];
        assert_eq!(actions["minProperties"], 1);
        let properties = actions["properties"].as_object().expect("properties");
        assert_eq!(properties.len(), OPERATIONS.len());
        for spec in OPERATIONS {
            let property = &properties[spec.name];
            assert_eq!(
                property["enum"],
                serde_json::json!(["audit", "deny", "kill"])
            );
        }
    }
}

#[test]
fn arm_and_layer_are_enums_and_selectors_are_label_selectors() {
    for crd in definitions() {
        let spec = &schema(&crd)["properties"]["spec"];
        assert_eq!(
            spec["properties"]["arm"]["enum"],
            serde_json::json!(["exec", "immediate"])
        );
        assert_eq!(
            spec["properties"]["layer"]["enum"],
            serde_json::json!(["lsm", "syscall", "both"])
        );
        let selector = &spec["properties"]["podSelector"]["properties"];
        assert!(selector["matchLabels"].is_object(), "{selector}");
        assert!(selector["matchExpressions"].is_object(), "{selector}");
        let required = spec["required"].as_array().expect("required");
        assert!(required.contains(&"podSelector".into()), "{required:?}");
        assert!(required.contains(&"actions".into()), "{required:?}");
    }
}

#[test]
fn status_is_a_subresource_and_a_bounded_map_keyed_by_node() {
    for crd in definitions() {
        let version = &crd.spec.versions[0];
        let subresources = version.subresources.as_ref().expect("subresources");
        assert!(subresources.status.is_some());
        let nodes = &schema(&crd)["properties"]["status"]["properties"]["nodes"];
        assert_eq!(nodes["x-kubernetes-list-type"], "map");
        assert_eq!(
            nodes["x-kubernetes-list-map-keys"],
            serde_json::json!(["node"])
        );
        assert_eq!(nodes["maxItems"], MAX_NODE_ENTRIES);
        // Removing the last entry by server-side apply leaves `null` behind.
        assert_eq!(nodes["nullable"], true);
        // A list-map key must always be present.
        let required = nodes["items"]["required"].as_array().expect("required");
        assert!(required.contains(&"node".into()), "{required:?}");
    }
}

#[test]
fn names_scopes_and_columns() {
    let [namespaced, cluster] = <[_; 2]>::try_from(definitions()).expect("two CRDs");
    assert_eq!(namespaced.spec.group, GROUP);
    assert_eq!(namespaced.spec.scope, "Namespaced");
    assert_eq!(
        namespaced.spec.names.short_names,
        Some(vec!["cpol".to_owned()])
    );
    assert_eq!(cluster.spec.scope, "Cluster");
    assert_eq!(
        cluster.spec.names.short_names,
        Some(vec!["ccpol".to_owned()])
    );
    let cluster_spec = &schema(&cluster)["properties"]["spec"]["properties"];
    assert!(cluster_spec["namespaceSelector"]["properties"]["matchLabels"].is_object());
    assert!(schema(&namespaced)["properties"]["spec"]["properties"]["namespaceSelector"].is_null());
    for crd in [namespaced, cluster] {
        let columns = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .expect("columns");
        let names: Vec<_> = columns.iter().map(|column| column.name.as_str()).collect();
        for name in ["Pods", "Actions", "Failing-Node", "Age"] {
            assert!(names.contains(&name), "{names:?}");
        }
    }
}

#[test]
fn a_policy_reads_and_converts() {
    let yaml = "
podSelector: {matchLabels: {app: web}}
containers: [nginx]
actions: {mount: deny, settime: audit}
layer: both
";
    let spec: ContainerPolicySpec = serde_yaml_ng::from_str(yaml).expect("spec");
    let actions: Vec<_> = spec.actions.iter().collect();
    assert_eq!(
        actions,
        [
            (
                Operation::from_name("mount").expect("mount"),
                PolicyAction::Deny
            ),
            (
                Operation::from_name("settime").expect("settime"),
                PolicyAction::Audit
            ),
        ]
    );
    assert_eq!(crate::policy::Arm::from(spec.arm), crate::policy::Arm::Exec);
    assert_eq!(
        crate::policy::Layer::from(spec.layer),
        crate::policy::Layer::Both
    );
    assert_eq!(
        enforcer_common::Action::from(PolicyAction::Kill),
        enforcer_common::Action::Kill
    );
    // Round trip: the names are written back as the table spells them.
    let again: ContainerPolicySpec =
        serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&spec).expect("yaml")).expect("spec");
    assert_eq!(again, spec);
}

#[test]
fn an_unknown_operation_or_action_is_refused_by_the_agent_too() {
    let bad_op = "podSelector: {}\nactions: {teleport: deny}\n";
    let err = serde_yaml_ng::from_str::<ContainerPolicySpec>(bad_op).expect_err("unknown op");
    assert!(
        err.to_string().contains("unknown operation \"teleport\""),
        "{err}"
    );
    let bad_action = "podSelector: {}\nactions: {mount: allow}\n";
    assert!(serde_yaml_ng::from_str::<ContainerPolicySpec>(bad_action).is_err());
}

#[test]
fn a_status_whose_last_entry_was_removed_reads_as_empty() {
    let status: PolicyStatus = serde_json::from_str(r#"{"nodes": null}"#).expect("status");
    assert!(status.nodes.is_empty());
}

#[test]
fn deploy_crds_yaml_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    let generated = manifests().expect("CRDs as YAML");
    assert!(
        on_disk == generated,
        "deploy/crds.yaml differs from the CRDs generated from enforcer/src/kubernetes/crd.rs; \
         run `cargo xtask crds` and commit the result"
    );
}
