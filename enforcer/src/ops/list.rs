//! `list`'s data: the policies in force with their counters, as a table or one JSON document.
use std::fmt::Write;

use anyhow::Result;
use enforcer_common::{Action, Counters, Operation};
use serde_json::json;

use crate::{bpf, cgroup::PathCache, policy};

struct Row {
    id: u64,
    path: String,
    actions: Vec<(Operation, Action)>,
    arm: policy::Arm,
    totals: Counters,
    /// `attach --layer` of the policy.
    layer: &'static str,
    /// Who attached it: `kubernetes` for the node agent's records, else `manual`.
    attached_by: &'static str,
}

/// What `list` prints: the table, or the JSON document.
pub fn list(bpf: bpf::Bpf, json: bool) -> Result<String> {
    let rows = match bpf.open_policy_maps() {
        Ok(maps) => collect(&maps)?,
        Err(bpf::LoaderError::NotInstalled(_)) => Vec::new(),
        Err(err) => return Err(err.into()),
    };
    let mut out = String::new();
    if json {
        render_json(&rows, &mut out);
    } else {
        render_table(&rows, &mut out);
    }
    Ok(out)
}

fn collect(maps: &bpf::PolicyMaps) -> Result<Vec<Row>> {
    let mut paths = PathCache::default();
    let mut rows = Vec::new();
    for entry in &maps.policies {
        let (id, policy) = entry?;
        let mut totals = Counters::default();
        if let Ok(per_cpu) = maps.counters.get(&id, 0) {
            for cpu in per_cpu.iter() {
                totals.add(cpu);
            }
        }
        rows.push(Row {
            id,
            path: paths.path(id),
            actions: policy::describe(&policy),
            arm: policy::Arm::of(&policy),
            totals,
            layer: policy::Layer::of(&policy).name(),
            attached_by: if policy.flags & enforcer_common::policy_flags::KUBERNETES != 0 {
                "kubernetes"
            } else {
                "manual"
            },
        });
    }
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(rows)
}

fn render_table(rows: &[Row], out: &mut String) {
    if rows.is_empty() {
        out.push_str("no policies attached\n");
        return;
    }
    // The CGROUP column is as wide as its longest path (Kubernetes paths pass 200 characters):
    // cutting one would hide which cgroup a row is, and a fixed width breaks every column after.
    let width = rows
        .iter()
        .map(|row| row.path.chars().count())
        .max()
        .unwrap_or(0)
        .max(40);
    let _ = writeln!(
        out,
        "{:<width$} {:>10}  {:<9} {:<6} {:>8} {:>8} {:>8}  {:<9} LAYER",
        "CGROUP", "ID", "OPERATION", "ACTION", "AUDITED", "DENIED", "KILLED", "ARM"
    );
    for row in rows {
        for (op, action) in &row.actions {
            let _ = writeln!(
                out,
                "{:<width$} {:>10}  {:<9} {:<6} {:>8} {:>8} {:>8}  {:<9} {}",
                row.path,
                row.id,
                op.name(),
                action.name(),
                row.totals.get(Action::Audit, *op),
                row.totals.get(Action::Deny, *op),
                row.totals.get(Action::Kill, *op),
                row.arm.name(),
                row.layer
            );
        }
    }
}

fn render_json(rows: &[Row], out: &mut String) {
    let policies: Vec<_> = rows
        .iter()
        .map(|row| {
            let operations: serde_json::Map<String, serde_json::Value> = row
                .actions
                .iter()
                .map(|(op, action)| {
                    (
                        op.name().to_owned(),
                        json!({
                            "action": action.name(),
                            "audited": row.totals.get(Action::Audit, *op),
                            "denied": row.totals.get(Action::Deny, *op),
                            "killed": row.totals.get(Action::Kill, *op),
                        }),
                    )
                })
                .collect();
            json!({
                "cgroup_id": row.id,
                "cgroup_path": row.path,
                "arm": row.arm.name(),
                "layer": row.layer,
                "attached_by": row.attached_by,
                "operations": operations,
                "tamper_refused": row.totals.tamper(),
                "events_suppressed": row.totals.suppressed(),
            })
        })
        .collect();
    let _ = writeln!(out, "{}", json!({ "policies": policies }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, id: u64) -> Row {
        Row {
            id,
            path: path.to_owned(),
            actions: vec![
                (Operation::Mount, Action::Deny),
                (Operation::Settime, Action::Audit),
            ],
            arm: policy::Arm::Exec,
            totals: Counters::default(),
            layer: "lsm",
            attached_by: "manual",
        }
    }

    #[test]
    fn columns_stay_aligned_with_kubernetes_length_paths() {
        let long = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234abcd_5678_4ef0_9abc_def012345678.slice/cri-containerd-3f2a9c1b4d5e6f708192a3b4c5d6e7f80912a3b4c5d6e7f8091a2b3c4d5e6f70.scope";
        let rows = [row("/a", 7), row(long, 123_456)];
        let mut out = String::new();
        render_table(&rows, &mut out);
        let mut lines = out.lines();
        let header = lines.next().expect("header");
        // Every row has its OPERATION and LAYER at the header's offsets.
        let operation = header.find("OPERATION").expect("OPERATION");
        let layer = header.find("LAYER").expect("LAYER");
        let rows = rows.iter().flat_map(|row| [row, row]);
        for (line, row) in lines.zip(rows) {
            assert!(line.starts_with(&row.path), "{out}");
            assert!(
                line[..operation].trim_end().ends_with(&row.id.to_string()),
                "the ID column moved:\n{out}"
            );
            assert!(
                ["mount ", "settime "]
                    .iter()
                    .any(|op| line[operation..].starts_with(op)),
                "the OPERATION column moved:\n{out}"
            );
            assert_eq!(&line[layer..], "lsm", "{out}");
        }
    }
}
