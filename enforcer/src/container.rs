//! `--container <ID>`: the cgroup of a container, from its runtime's state or from the cgroup names
//! runtimes give containers.
//!
//! Looked up, in order (an id may be given in full or as a unique prefix, as `docker ps` shows):
//! 1. runc state, `<root>/<id>/state.json` (`cgroup_paths[""]`, the cgroup v2 path, else the
//!    init process's cgroup), under the runc roots of runc itself, Docker and containerd;
//! 2. crun state, `/run/crun/<id>/status` (`cgroup-path`, else the process's cgroup);
//! 3. the cgroup tree: a cgroup named for the container by Docker, containerd (CRI), CRI-O or
//!    podman ([`crate::workload::workload`]).
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::cgroup::{self, Cgroup, CgroupError};

/// Directories holding one runc state directory per container.
const RUNC_ROOTS: [&str; 3] = [
    "/run/runc",
    "/run/docker/runtime-runc/moby",
    "/run/containerd/runc",
];
/// Directory holding one crun state directory per container.
const CRUN_ROOT: &str = "/run/crun";

#[derive(Debug, Error)]
pub enum ContainerError {
    #[error(
        "no container has the id {0} (looked in the runc state under {runc}, the crun state under {CRUN_ROOT}, and the cgroup names of docker, containerd, CRI-O and podman); give the id `runc list`, `crun list` or `docker ps` shows, or use --cgroup",
        runc = RUNC_ROOTS.join(", ")
    )]
    Unknown(String),
    #[error("the container id {id} is ambiguous: it starts {matches}; give more of the id")]
    Ambiguous { id: String, matches: String },
    #[error("cannot read the state of container {id} in {path}: {detail}; use --cgroup")]
    BadState {
        id: String,
        path: String,
        detail: String,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
}

/// A container found in a runtime's state: its full id, and the cgroup path (absolute or
/// relative to the cgroup2 root) of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    id: String,
    cgroup: String,
    source: String,
}

/// The cgroup of the container `id` (full or a unique prefix).
pub fn resolve(id: &str) -> Result<Cgroup, ContainerError> {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        return Err(ContainerError::Unknown(id.to_owned()));
    }
    let mut found = from_state(id)?;
    if found.is_empty() {
        found = from_cgroup_names(id)?;
    }
    // An exact id wins over longer ids it is a prefix of.
    if found.iter().any(|f| f.id == id) {
        found.retain(|f| f.id == id);
    }
    // The same container seen twice (state and names) is one match.
    let mut by_id: BTreeMap<String, Found> = BTreeMap::new();
    for f in found {
        by_id.entry(f.id.clone()).or_insert(f);
    }
    match by_id.len() {
        0 => Err(ContainerError::Unknown(id.to_owned())),
        1 => {
            let f = by_id.into_values().next().expect("one");
            Ok(cgroup::resolve(&f.cgroup)?)
        }
        _ => Err(ContainerError::Ambiguous {
            id: id.to_owned(),
            matches: by_id
                .values()
                .map(|f| format!("{} ({})", f.id, f.source))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// State directories under `root` (and one level of namespaces below it, as containerd keeps
/// them) whose name starts with `id`.
fn state_dirs(root: &Path, id: &str) -> Vec<(String, PathBuf)> {
    let mut dirs = Vec::new();
    let Ok(entries) = fs::read_dir(root) else {
        return dirs;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(id)
            && (path.join("state.json").is_file() || path.join("status").is_file())
        {
            dirs.push((name, path));
        } else if root.ends_with("containerd/runc") && path.is_dir() {
            dirs.extend(state_dirs(&path, id));
        }
    }
    dirs
}

fn from_state(id: &str) -> Result<Vec<Found>, ContainerError> {
    let mut found = Vec::new();
    for root in RUNC_ROOTS {
        for (name, dir) in state_dirs(Path::new(root), id) {
            let path = dir.join("state.json");
            let state = read_json(&name, &path)?;
            let cgroup = state["cgroup_paths"][""]
                .as_str()
                .map(str::to_owned)
                .or_else(|| process_cgroup(state["init_process_pid"].as_u64()?));
            found.push(found_at(name, cgroup, &path, "runc")?);
        }
    }
    for (name, dir) in state_dirs(Path::new(CRUN_ROOT), id) {
        let path = dir.join("status");
        let state = read_json(&name, &path)?;
        let cgroup = state["cgroup-path"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .or_else(|| process_cgroup(state["pid"].as_u64()?));
        found.push(found_at(name, cgroup, &path, "crun")?);
    }
    Ok(found)
}

fn found_at(
    id: String,
    cgroup: Option<String>,
    path: &Path,
    runtime: &str,
) -> Result<Found, ContainerError> {
    match cgroup {
        Some(cgroup) => Ok(Found {
            id,
            cgroup,
            source: runtime.to_owned(),
        }),
        None => Err(ContainerError::BadState {
            id,
            path: path.display().to_string(),
            detail: "it names no cgroup and no running process".to_owned(),
        }),
    }
}

fn read_json(id: &str, path: &Path) -> Result<serde_json::Value, ContainerError> {
    let bad = |detail: String| ContainerError::BadState {
        id: id.to_owned(),
        path: path.display().to_string(),
        detail,
    };
    let text = fs::read_to_string(path).map_err(|err| bad(err.to_string()))?;
    serde_json::from_str(&text).map_err(|err| bad(err.to_string()))
}

/// The cgroup v2 path of a process (`0::/path` in `/proc/<pid>/cgroup`).
fn process_cgroup(pid: u64) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Cgroups named for a container whose id starts with `id`, the outermost per container (crun's
/// and podman's `container` sub-cgroup is below the container's own).
fn from_cgroup_names(id: &str) -> Result<Vec<Found>, ContainerError> {
    let root = cgroup::root()?;
    let mut best: BTreeMap<String, String> = BTreeMap::new();
    cgroup::walk(&root, |_, relative, _| {
        let shown = cgroup::display_path(relative);
        if let Some(container) = crate::workload::workload(&shown).and_then(|w| w.container)
            && !container.monitor
            && container.id.starts_with(id)
        {
            let slot = best.entry(container.id).or_insert_with(|| shown.clone());
            if shown.len() < slot.len() {
                *slot = shown;
            }
        }
        cgroup::Walk::Descend
    });
    Ok(best
        .into_iter()
        .map(|(id, cgroup)| Found {
            id,
            cgroup,
            source: "cgroup name".to_owned(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_are_paths_are_unknown() {
        for id in ["", "a/b", "..", "."] {
            assert!(
                matches!(resolve(id), Err(ContainerError::Unknown(_))),
                "{id:?}"
            );
        }
    }

    #[test]
    fn state_dirs_match_by_prefix() {
        let dir = std::env::temp_dir().join(format!("enforcer-state-{}", std::process::id()));
        for name in ["abc123", "abd456", "other"] {
            fs::create_dir_all(dir.join(name)).unwrap();
            fs::write(dir.join(name).join("state.json"), "{}").unwrap();
        }
        let mut names: Vec<String> = state_dirs(&dir, "ab").into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, ["abc123", "abd456"]);
        assert_eq!(state_dirs(&dir, "abc").len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }
}
