//! cgroup v2 paths and ids. The id the kernel reports (`bpf_get_current_cgroup_id`) is the inode
//! number of the cgroup's directory on the cgroup2 filesystem.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::host;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error(
        "no cgroup v2 filesystem is mounted; mount one with `mount -t cgroup2 none /sys/fs/cgroup`"
    )]
    NoCgroup2,
    #[error("cgroup {0} does not exist; create it with `mkdir` under the cgroup v2 mount ({1})")]
    Missing(String, String),
    #[error("{0} is not a cgroup v2 directory (it is on {1}); give a directory under {2}")]
    NotCgroup2(String, &'static str, String),
    #[error("{0} is a file, not a cgroup directory; give the cgroup's directory")]
    NotDirectory(String),
    #[error("no cgroup has id {0} under {1}; `enforcer list` shows the ids in use")]
    UnknownId(u64, String),
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
}

/// A cgroup v2 directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// Inode number of the directory: the id BPF programs see.
    pub id: u64,
    /// Path relative to the cgroup2 root, with a leading `/` (`/` for the root itself).
    pub path: String,
    /// Depth below the cgroup2 root (the root is 0).
    pub level: u32,
}

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on
/// hybrid ones.
pub fn root() -> Result<PathBuf, CgroupError> {
    let mountinfo =
        host::mountinfo().map_err(|err| CgroupError::Io("/proc/self/mountinfo".into(), err))?;
    host::mounts(&mountinfo)
        .find(|mount| mount.fstype == "cgroup2")
        .map(|mount| PathBuf::from(mount.point))
        .ok_or(CgroupError::NoCgroup2)
}

/// Resolves what the user typed after `--cgroup`: a number is an id, anything else a path, either
/// absolute on the filesystem or relative to the cgroup2 root.
pub fn resolve(spec: &str) -> Result<Cgroup, CgroupError> {
    let root = root()?;
    match spec.parse::<u64>() {
        Ok(id) => find_by_id(&root, id)?
            .ok_or_else(|| CgroupError::UnknownId(id, root.display().to_string())),
        Err(_) => from_path(&root, Path::new(spec)),
    }
}

fn from_path(root: &Path, spec: &Path) -> Result<Cgroup, CgroupError> {
    // A relative path is below the cgroup2 mount, never below the current directory (which
    // would make the same command name another cgroup, or a plain directory, depending on where
    // it runs). An absolute path that does not exist is read as relative to the mount too
    // (`/kubepods.slice/...`).
    let candidate = if spec.is_absolute() && spec.exists() {
        spec.to_path_buf()
    } else {
        root.join(spec.strip_prefix("/").unwrap_or(spec))
    };
    let shown = spec.display().to_string();
    let meta = fs::metadata(&candidate)
        .map_err(|_| CgroupError::Missing(shown.clone(), root.display().to_string()))?;
    if !meta.is_dir() {
        return Err(CgroupError::NotDirectory(shown));
    }
    let fs_type = nix::sys::statfs::statfs(&candidate)
        .map_err(|err| CgroupError::Io(shown.clone(), err.into()))?
        .filesystem_type()
        .0;
    let canonical = candidate
        .canonicalize()
        .map_err(|err| CgroupError::Io(shown.clone(), err))?;
    let relative = match canonical.strip_prefix(root) {
        Ok(relative) if fs_type == CGROUP2_SUPER_MAGIC => relative.to_path_buf(),
        _ => {
            return Err(CgroupError::NotCgroup2(
                shown,
                fs_name(fs_type),
                root.display().to_string(),
            ));
        }
    };
    Ok(Cgroup {
        id: meta.ino(),
        path: display_path(&relative),
        level: relative.components().count() as u32,
    })
}

fn fs_name(fs_type: i64) -> &'static str {
    match fs_type {
        0x0027_e0eb => "cgroup v1",
        0x0102_1994 => "tmpfs",
        0xef53 => "ext4",
        _ => "another filesystem",
    }
}

pub fn display_path(relative: &Path) -> String {
    format!("/{}", relative.display())
}

/// What a [`walk`] visitor wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// Go on, into this directory's children too.
    Descend,
    /// Stop the walk here.
    Stop,
}

/// Visits `top` and every directory below it, depth first, with its path relative to `top` and
/// its depth below `top`. Directories that vanish or cannot be read during the walk are passed
/// over (cgroups come and go); callers that bound a walk decide what running out means.
pub fn walk(top: &Path, mut visit: impl FnMut(&Path, &Path, u32) -> Walk) {
    let mut stack = vec![(top.to_path_buf(), 0u32)];
    while let Some((dir, depth)) = stack.pop() {
        let relative = dir.strip_prefix(top).unwrap_or(Path::new(""));
        match visit(&dir, relative, depth) {
            Walk::Stop => return,
            Walk::Descend => {}
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
}

/// Walks the cgroup tree for the directory with inode `id`. Cgroup trees are small (hundreds of
/// directories on a busy node), and this runs only for numeric `--cgroup` arguments and display.
pub fn find_by_id(root: &Path, id: u64) -> Result<Option<Cgroup>, CgroupError> {
    let mut found = None;
    walk(root, |dir, relative, level| {
        // A directory removed while we walk is passed over.
        if fs::metadata(dir).is_ok_and(|meta| meta.ino() == id) {
            found = Some(Cgroup {
                id,
                path: display_path(relative),
                level,
            });
            return Walk::Stop;
        }
        Walk::Descend
    });
    Ok(found)
}

/// Resolves ids to paths for display, remembering what it found. A miss triggers one walk.
#[derive(Default)]
pub struct PathCache {
    root: Option<PathBuf>,
    known: std::collections::HashMap<u64, String>,
}

impl PathCache {
    pub fn path(&mut self, id: u64) -> String {
        if let Some(path) = self.known.get(&id) {
            return path.clone();
        }
        if self.root.is_none() {
            self.root = root().ok();
        }
        let path = self
            .root
            .as_deref()
            .and_then(|root| find_by_id(root, id).ok().flatten())
            .map_or_else(|| format!("<cgroup {id}>"), |cgroup| cgroup.path);
        self.known.insert(id, path.clone());
        path
    }
}

/// Every process id in `target` and the cgroups below it.
pub fn processes_below(target: &Cgroup) -> Result<Vec<u32>, CgroupError> {
    let top = root()?.join(target.path.trim_start_matches('/'));
    let mut pids = Vec::new();
    walk(&top, |dir, _, _| {
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(
                procs
                    .lines()
                    .filter_map(|line| line.trim().parse::<u32>().ok()),
            );
        }
        Walk::Descend
    });
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_display_from_the_root() {
        assert_eq!(display_path(Path::new("")), "/");
        assert_eq!(display_path(Path::new("kubepods/pod1")), "/kubepods/pod1");
    }

    #[test]
    fn a_plain_directory_is_not_a_cgroup() {
        let dir = std::env::temp_dir();
        let err = from_path(Path::new("/sys/fs/cgroup/unified"), &dir).unwrap_err();
        assert!(matches!(err, CgroupError::NotCgroup2(..)), "{err}");
    }
}
