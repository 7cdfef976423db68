//! `enforcer daemon --kubernetes`: the node agent's loop. It connects with the in-cluster
//! config or a kubeconfig, waits until every watcher has listed once (so it never removes what
//! it merely has not seen yet), then reconciles on every change, and every couple of seconds
//! while a wanted cgroup is still missing: looks the pods' and containers' cgroups up, plans
//! ([`reconcile`]), writes the plan through the policy store under the state lock, fills the
//! names events carry and reports failures in the policies' status.
//!
//! What it pinned before a restart carries [`policy_flags::KUBERNETES`]: the first reconcile
//! finds those records wanted and keeps them (adoption), and removes only the ones nothing
//! selects any more. Nothing is removed on an error, and an apiserver outage leaves the stores
//! and so the kernel as they were.
use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result};
use enforcer_common::{Policy, policy_flags};
use kube::{Client, Config, config::KubeConfigOptions, config::Kubeconfig};
use tokio::sync::Notify;

use super::{
    names::Names,
    reconcile::{self, Found, Place, Plan, Want},
    resolve::{Located, Locator},
    status::Reporter,
    watch::Stores,
};
use crate::{bpf, error::ExitError, store};

/// How soon a missing cgroup is looked for again.
const RETRY: Duration = Duration::from_secs(2);
/// Changes arriving this close together are reconciled once.
const SETTLE: Duration = Duration::from_millis(100);

/// The API client: from `kubeconfig` when given, else the pod's in-cluster config.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|err| {
                ExitError::no_cluster(format!(
                    "cannot read the kubeconfig {}: {err}",
                    path.display()
                ))
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|err| {
                    ExitError::no_cluster(format!(
                        "cannot use the kubeconfig {}: {err}",
                        path.display()
                    ))
                })?
        }
        None => Config::incluster().map_err(|err| {
            ExitError::no_cluster(format!(
                "no in-cluster config ({err}); outside a pod, give --kubeconfig"
            ))
        })?,
    };
    Client::try_from(config)
        .map_err(|err| ExitError::no_cluster(format!("cannot make an API client: {err}")).into())
}

/// The node the agent serves: `given`, else the `NODE_NAME` the DaemonSet sets from the
/// downward API.
pub fn node_name(given: Option<String>) -> Result<String> {
    given
        .or_else(|| std::env::var("NODE_NAME").ok())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| {
            ExitError::no_cluster(
                "no node name: give --node-name or set NODE_NAME (the DaemonSet sets it from spec.nodeName)".into(),
            )
            .into()
        })
}

/// Runs the agent until the daemon stops (it never returns on its own but for a broken setup).
/// `ready` turns true once the first reconcile after the initial lists is done (`/readyz`).
pub async fn run(
    client: Client,
    node: String,
    bpf: bpf::Bpf,
    names: Names,
    ready: Arc<AtomicBool>,
) -> Result<()> {
    let locator = Locator::on_host().context("cannot find the cgroup2 tree")?;
    let changed = Arc::new(Notify::new());
    let stores = Stores::start(&client, &node, &changed);
    stores.ready().await?;
    eprintln!("enforcer: kubernetes: watching the pods of node {node} and the policies");
    let mut reporter = Reporter::new(client, &node);
    let mut named: HashSet<u64> = HashSet::new();
    loop {
        let snapshot = stores.snapshot(&node);
        let (wants, selector_errors) =
            reconcile::wants(&snapshot.pods, &snapshot.policies, &snapshot.namespaces);
        let locator = locator.clone();
        let plan = tokio::task::spawn_blocking(move || enforce(bpf, &locator, wants))
            .await
            .context("the reconcile task failed")?;
        let plan = match plan {
            Ok(plan) => plan,
            Err(err) => {
                // The pins are gone or unreadable (`enforcer reset`): retry; nothing to undo.
                eprintln!("enforcer: kubernetes: cannot reconcile (retrying): {err:#}");
                Plan {
                    pending: true,
                    ..Plan::default()
                }
            }
        };
        let now: HashSet<u64> = plan.names.iter().map(|(id, _)| *id).collect();
        for gone in named.difference(&now) {
            names.remove(*gone);
        }
        for (id, pod) in &plan.names {
            names.set(*id, pod.clone());
        }
        named = now;
        reporter
            .report(&snapshot.metas, &plan.health, &selector_errors)
            .await;
        ready.store(true, Ordering::Relaxed);
        tokio::select! {
            () = changed.notified() => {}
            () = tokio::time::sleep(RETRY), if plan.pending => {}
        }
        tokio::time::sleep(SETTLE).await;
    }
}

/// Looks the wanted cgroups up, plans against the pinned records and writes the plan, all under
/// the state lock so no CLI change interleaves. Write failures become errors of the policies
/// behind the record.
fn enforce(bpf: bpf::Bpf, locator: &Locator, wants: Vec<Want>) -> Result<Plan> {
    let mut pods: HashMap<String, Located> = HashMap::new();
    let found: Vec<(Want, Found)> = wants
        .into_iter()
        .map(|want| {
            let found = look_up(locator, &want.place, &mut pods);
            (want, found)
        })
        .collect();
    let lock = bpf.lock()?;
    let mut maps = lock.bpf().open_policy_maps()?;
    let pinned: HashMap<u64, Policy> = maps.policies()?.into_iter().collect();
    let mut plan = reconcile::plan(&found, &pinned);
    let behind: HashMap<u64, Vec<String>> = found
        .iter()
        .filter_map(|(want, found)| match found {
            Found::At(cgroup) => Some((
                cgroup.id,
                want.selecting.iter().map(|s| s.name.clone()).collect(),
            )),
            _ => None,
        })
        .collect();
    for (cgroup, record) in &plan.set {
        let replaced = pinned.contains_key(&cgroup.id);
        match store::set_policy(&mut maps, cgroup, *record) {
            Ok(()) => eprintln!(
                "enforcer: kubernetes: {} {} (id {}) for {}",
                if replaced { "updated" } else { "attached" },
                cgroup.path,
                cgroup.id,
                behind
                    .get(&cgroup.id)
                    .map(|p| p.join(", "))
                    .unwrap_or_default()
            ),
            Err(err) => {
                for policy in behind.get(&cgroup.id).into_iter().flatten() {
                    plan.health
                        .entry(policy.clone())
                        .or_default()
                        .errors
                        .insert(format!("cannot attach to {}: {err:#}", cgroup.path));
                }
            }
        }
    }
    for id in &plan.remove {
        debug_assert!(pinned[id].flags & policy_flags::KUBERNETES != 0);
        match store::remove_policy(&mut maps, *id) {
            Ok(()) => {
                eprintln!("enforcer: kubernetes: detached cgroup id {id}: nothing selects it");
            }
            Err(err) => {
                eprintln!("enforcer: kubernetes: cannot detach cgroup id {id}: {err:#}");
            }
        }
    }
    drop(lock);
    Ok(plan)
}

/// Where the cgroup of `place` is; a pod's lookup is shared by its containers.
fn look_up(locator: &Locator, place: &Place, pods: &mut HashMap<String, Located>) -> Found {
    let mut pod = |uid: &str, qos| {
        pods.entry(uid.to_owned())
            .or_insert_with(|| locator.pod(uid, qos))
            .clone()
    };
    let located = match place {
        Place::Pod { uid, qos } => pod(uid, *qos),
        Place::Container { pod_uid, qos, id } => {
            let pod_dir = match pod(pod_uid, *qos) {
                Located::At(path) => Some(path),
                _ => None,
            };
            locator.container(pod_dir.as_deref(), id)
        }
    };
    match located {
        Located::At(path) => match locator.open(&path) {
            Ok(Some(cgroup)) => Found::At(cgroup),
            Ok(None) => Found::NotYet,
            Err(err) => Found::Failed(format!("cannot open {path}: {err}")),
        },
        Located::NotYet { .. } => Found::NotYet,
        Located::Ambiguous(paths) => Found::Failed(format!(
            "several cgroups carry its name: {}",
            paths.join(", ")
        )),
    }
}
