//! The JSON record of an event (one object per line; the README's event schema). Field names
//! follow the Elastic Common Schema where one exists.
use std::time::SystemTime;

use enforcer_common::{Hook, Operation, caps, string_slot, syscalls};
use serde_json::{Value, json};

use super::{
    Kind, Record, Rendered,
    describe::{comm, detail, requested_time, string},
};
use crate::{kubernetes::names::PodRef, workload::Workload};

impl Rendered {
    /// One JSON object: the event, its cgroup and what the cgroup path says about the workload.
    pub fn json(&self) -> Value {
        let record = &self.record;
        let e = &record.raw;
        let mut value = json!({
            "@timestamp": humantime::format_rfc3339_nanos(self.time).to_string(),
            "event": {
                "kind": if record.kind == Kind::Summary { "event" } else { "alert" },
                "action": record.op_name(),
                "outcome": if e.errno == 0 { "success" } else { "failure" },
                "type": [if e.errno == 0 { "info" } else { "denied" }],
            },
            "enforcer": {
                "kind": record.kind.name(),
                "operation": record.op_name(),
                "action": record.action.name(),
                "hook": record.hook_name(),
                "errno": e.errno,
                "detail": detail(record),
                "policy_cgroup_id": e.policy_cgroup_id,
                "syscall": {
                    "nr": e.syscall,
                    "name": syscalls::name(e.syscall),
                    "args": e.args,
                    "ret": e.ret,
                    "compat": e.compat != 0,
                },
                "hook_arg": e.hook_arg,
                "source": record.source.name(),
                "refused_by": record.refused_by.map(super::record::RefusedBy::name),
            },
            "process": {
                "pid": e.pid,
                "thread": { "id": e.tid },
                "name": comm(e),
            },
            "user": { "id": e.uid.to_string() },
            "group": { "id": e.gid.to_string() },
            "cgroup": { "id": e.cgroup_id, "path": self.cgroup_path },
        });
        if let (Value::Object(fields), Some(target)) =
            (operation_fields(record), value["enforcer"].as_object_mut())
        {
            target.extend(fields);
        }
        if let Some(workload) = &self.workload {
            add_workload(&mut value, workload);
        }
        if let Some(names) = &self.kubernetes {
            add_kubernetes(&mut value, names);
        }
        value
    }
}

/// Operation-specific fields of the JSON record.
fn operation_fields(record: &Record) -> Value {
    let event = &record.raw;
    match record.kind {
        Kind::Summary => {
            return json!({ "suppressed": {
                "count": event.hook_arg,
                "since_ktime_ns": event.args[0],
            }});
        }
        Kind::Tamper => return json!({ "tamper": { "target": event.hook_arg } }),
        Kind::Violation => {}
    }
    match record.operation {
        Some(Operation::Mount) => json!({ "mount": {
            "source": string(event, string_slot::SOURCE),
            "target": string(event, string_slot::TARGET),
            "fs_type": string(event, string_slot::FS_TYPE),
            "flags": (event.hook_arg != 0 && record.hook != Some(Hook::Capable)).then_some(event.hook_arg),
        }}),
        Some(Operation::Keyctl) => json!({ "key": {
            "serial": (event.syscall == syscalls::KEYCTL).then_some(event.args[1] as i32),
            "type": string(event, string_slot::SOURCE),
            "description": string(event, string_slot::TARGET),
            "permission": (record.hook == Some(Hook::KeyPermission)).then_some(event.hook_arg),
        }}),
        Some(Operation::Settime) => json!({ "time": {
            "requested_sec": (event.requested_sec >= 0).then_some(event.requested_sec),
            "requested": requested_time(event),
            "capability": (event.hook_arg == i64::from(caps::CAP_SYS_TIME)).then_some("CAP_SYS_TIME"),
        }}),
        // reboot(magic1, magic2, cmd, arg): what the caller asked for (LINUX_REBOOT_CMD_*).
        Some(Operation::Reboot) => json!({ "reboot": {
            "command": (event.syscall == syscalls::REBOOT).then_some(event.args[2] as u32),
        }}),
        // kexec_load(entry, nr_segments, segments, flags), kexec_file_load(kernel, initrd,
        // cmdline_len, cmdline, flags).
        Some(Operation::Kexec) => json!({ "kexec": {
            "flags": match event.syscall {
                syscalls::KEXEC_LOAD => Some(event.args[3]),
                syscalls::KEXEC_FILE_LOAD => Some(event.args[4]),
                _ => None,
            },
        }}),
        None => json!({}),
    }
}

/// Adds what the cgroup path says about the workload to a JSON record, under ECS names where ECS
/// has them: `container.id`, `container.runtime`, `kubernetes.pod.uid`. A runtime monitor
/// (`conmon`) is not in its container: it gets `enforcer.monitor_of` (and its runtime), not
/// `container.*`. A systemd unit goes under `enforcer.systemd_unit`.
fn add_workload(record: &mut Value, workload: &Workload) {
    if let Some(container) = &workload.container {
        if container.monitor {
            record["enforcer"]["monitor_of"] = json!({
                "container_id": container.id,
                "runtime": container.runtime.name(),
            });
        } else {
            record["container"] = json!({
                "id": container.id,
                "runtime": container.runtime.name(),
            });
        }
    }
    if let Some(uid) = &workload.pod_uid {
        record["kubernetes"] = json!({ "pod": { "uid": uid } });
    }
    if let Some(unit) = &workload.unit {
        record["enforcer"]["systemd_unit"] = json!(unit);
    }
}

/// Adds the node agent's names of the event's cgroup, under ECS names: `orchestrator.*` (the
/// pod as the resource), `kubernetes.namespace` and `kubernetes.pod.{name,uid}`,
/// `container.name` (a container's cgroup only) and `rule.name` (the policies whose merge is in
/// force there, comma-joined). Beside what the cgroup path says (`container.id`, ...), which
/// stays.
fn add_kubernetes(record: &mut Value, names: &PodRef) {
    record["orchestrator"] = json!({
        "type": "kubernetes",
        "namespace": names.namespace,
        "resource": { "type": "pod", "name": names.pod },
    });
    let kubernetes = &mut record["kubernetes"];
    kubernetes["namespace"] = json!(names.namespace);
    kubernetes["pod"]["name"] = json!(names.pod);
    kubernetes["pod"]["uid"] = json!(names.pod_uid);
    if let Some(container) = &names.container {
        record["container"]["name"] = json!(container);
    }
    if !names.policies.is_empty() {
        record["rule"] = json!({ "name": names.policies.join(",") });
    }
}

/// The JSON record of `count` lost events, noticed at `when`: stamped like the events, since log
/// pipelines (Elasticsearch data streams among them) refuse a record without `@timestamp`.
pub fn drop_record(count: u64, when: SystemTime) -> Value {
    json!({
        "@timestamp": humantime::format_rfc3339_nanos(when).to_string(),
        "event": { "kind": "metric", "action": "events-dropped" },
        "enforcer": { "dropped": count },
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use enforcer_common::{refused_by, source};

    use super::*;
    use crate::{events::tests::sample, workload::workload};

    const ID: &str = "3f2a9c1b4d5e6f708192a3b4c5d6e7f80912a3b4c5d6e7f8091a2b3c4d5e6f70";
    const POD: &str = "/kubepods.slice/kubepods-besteffort.slice/\
                       kubepods-besteffort-pod1234abcd_5678_4ef0_9abc_def012345678.slice";

    fn rendered(event: enforcer_common::Event, path: &str) -> Rendered {
        Rendered {
            time: SystemTime::UNIX_EPOCH,
            cgroup_path: path.into(),
            workload: workload(path),
            kubernetes: None,
            record: event.into(),
        }
    }

    #[test]
    fn json_names_the_layer_that_refused() {
        let mut event = sample();
        event.source = source::SYSCALL;
        event.hook = Hook::SysExit as u8;
        event.refused_by = refused_by::SECCOMP;
        let rendered = rendered(event, "/demo");
        let value = rendered.json();
        assert_eq!(value["enforcer"]["source"], "syscall");
        assert_eq!(value["enforcer"]["refused_by"], "seccomp");
        assert_eq!(value["enforcer"]["hook"], "sys_exit");
        assert_eq!(value["enforcer"]["syscall"]["ret"], -1);
        assert_eq!(rendered.columns()[6], "seccomp");
        assert_eq!(
            rendered.columns()[7],
            "settimeofday to 2030-01-01T00:00:00Z = -1 EPERM"
        );
    }

    #[test]
    fn json_carries_the_schema_fields() {
        let value = rendered(sample(), "/demo").json();
        assert_eq!(value["process"]["pid"], 42);
        assert_eq!(value["enforcer"]["action"], "deny");
        assert_eq!(value["event"]["outcome"], "failure");
        assert_eq!(value["cgroup"]["path"], "/demo");
        assert_eq!(value["enforcer"]["time"]["requested_sec"], 1_893_456_000);
        assert!(value.get("container").is_none());
    }

    #[test]
    fn json_gains_ecs_container_and_pod_fields() {
        let record = rendered(sample(), &format!("{POD}/cri-containerd-{ID}.scope")).json();
        assert_eq!(record["container"]["id"], ID);
        assert_eq!(record["container"]["runtime"], "containerd");
        assert_eq!(
            record["kubernetes"]["pod"]["uid"],
            "1234abcd-5678-4ef0-9abc-def012345678"
        );
        assert_eq!(record["enforcer"]["action"], "deny");
        assert_eq!(record["cgroup"]["id"], 7);
        assert!(record["enforcer"].get("systemd_unit").is_none());
    }

    #[test]
    fn json_carries_the_node_agents_kubernetes_names() {
        let mut rendered = rendered(sample(), &format!("{POD}/cri-containerd-{ID}.scope"));
        let names = PodRef {
            namespace: "shop".into(),
            pod: "web-1".into(),
            pod_uid: "1234abcd-5678-4ef0-9abc-def012345678".into(),
            container: Some("nginx".into()),
            policies: vec!["shop/no-mount".into(), "baseline".into()],
        };
        rendered.kubernetes = Some(names.clone());
        let record = rendered.json();
        assert_eq!(record["orchestrator"]["type"], "kubernetes");
        assert_eq!(record["orchestrator"]["namespace"], "shop");
        assert_eq!(record["orchestrator"]["resource"]["type"], "pod");
        assert_eq!(record["orchestrator"]["resource"]["name"], "web-1");
        assert_eq!(record["kubernetes"]["namespace"], "shop");
        assert_eq!(record["kubernetes"]["pod"]["name"], "web-1");
        assert_eq!(record["kubernetes"]["pod"]["uid"], names.pod_uid);
        // What the cgroup path says stays beside the names.
        assert_eq!(record["container"]["id"], ID);
        assert_eq!(record["container"]["runtime"], "containerd");
        assert_eq!(record["container"]["name"], "nginx");
        assert_eq!(record["rule"]["name"], "shop/no-mount,baseline");
        assert_eq!(rendered.columns()[1], "shop/web-1/nginx");

        // The pod's own cgroup: no container name; no policy, no rule.
        rendered.kubernetes = Some(PodRef {
            container: None,
            policies: Vec::new(),
            ..names
        });
        rendered.workload = None;
        let record = rendered.json();
        assert!(record.get("container").is_none(), "{record}");
        assert!(record.get("rule").is_none(), "{record}");
        assert_eq!(rendered.columns()[1], "shop/web-1");
    }

    #[test]
    fn json_keeps_monitors_out_of_their_container() {
        let record = rendered(
            sample(),
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
        )
        .json();
        assert!(record.get("container").is_none());
        assert_eq!(record["enforcer"]["monitor_of"]["container_id"], ID);
        assert_eq!(record["enforcer"]["monitor_of"]["runtime"], "podman");
    }

    #[test]
    fn json_names_systemd_units() {
        let record = rendered(sample(), "/system.slice/nginx.service").json();
        assert_eq!(record["enforcer"]["systemd_unit"], "nginx.service");
        assert!(record.get("container").is_none());
        assert!(record.get("kubernetes").is_none());
    }

    #[test]
    fn drop_records_carry_the_time_they_were_noticed() {
        let when = std::time::UNIX_EPOCH + Duration::from_nanos(1_767_225_600_123_456_789);
        let record = drop_record(41, when);
        // RFC 3339 in UTC with nanoseconds, as the events' `@timestamp`.
        assert_eq!(record["@timestamp"], "2026-01-01T00:00:00.123456789Z");
        assert_eq!(record["enforcer"]["dropped"], 41);
        assert_eq!(record["event"]["action"], "events-dropped");
    }
}
