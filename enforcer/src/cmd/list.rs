//! `enforcer list`: what is enforced now, with per-operation counters.
use std::fmt::Write;

use anyhow::Result;
use enforcer_common::{Action, Counters, Operation};
use serde_json::json;

use crate::{cgroup::PathCache, daemon::control, loader, policy};

#[derive(clap::Args)]
pub struct Args {
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

struct Row {
    id: u64,
    path: String,
    actions: Vec<(Operation, Action)>,
    arm: policy::Arm,
    totals: Counters,
    /// `attach --layer` of the policy (#6).
    layer: &'static str,
}

pub fn run(args: Args) -> Result<()> {
    if control::forward(&control::Request::List { json: args.json })? {
        return Ok(());
    }
    print!("{}", render(args.json)?);
    Ok(())
}

/// What `list` prints: the table, or the JSON document. The daemon runs this for a forwarded
/// `list`.
pub fn render(json: bool) -> Result<String> {
    let rows = match loader::open_policy_maps_existing() {
        Ok(maps) => collect(&maps)?,
        Err(loader::LoaderError::NotInstalled(_)) => Vec::new(),
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

fn collect(maps: &loader::PolicyMaps) -> Result<Vec<Row>> {
    let mut paths = PathCache::default();
    let mut rows = Vec::new();
    for entry in maps.policies.iter() {
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
            layer: crate::cmd::attach::Layer::of(&policy).name(),
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
    let _ = writeln!(
        out,
        "{:<40} {:>10}  {:<9} {:<6} {:>8} {:>8} {:>8}  {:<9} LAYER",
        "CGROUP", "ID", "OPERATION", "ACTION", "AUDITED", "DENIED", "KILLED", "ARM"
    );
    for row in rows {
        for (op, action) in &row.actions {
            let _ = writeln!(
                out,
                "{:<40} {:>10}  {:<9} {:<6} {:>8} {:>8} {:>8}  {:<9} {}",
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
                "operations": operations,
                "tamper_refused": row.totals.tamper(),
                "events_suppressed": row.totals.suppressed(),
            })
        })
        .collect();
    let _ = writeln!(out, "{}", json!({ "policies": policies }));
}
