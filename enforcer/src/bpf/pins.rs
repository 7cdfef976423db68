//! The pin tree of one map ABI version (`/sys/fs/bpf/enforcer/v<N>/{maps,links,next}`), the
//! other versions' pins beside it, the lock that serialises every change to them, and the
//! questions commands ask about them (is this build pinned, which build is).
use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use aya::maps::{Array, Map, MapData};
use enforcer_common::HOOKS;
use nix::fcntl::{Flock, FlockArg};

use super::{Bpf, LoaderError, kernel::require_root, map_names};
use crate::paths::{self, PIN_BASE, STATE_LOCK};

/// Paths of one ABI version's pins.
pub struct Pins {
    pub(super) dir: PathBuf,
}

impl Pins {
    pub(super) fn of(abi: u32) -> Self {
        Self {
            dir: paths::pin_dir(abi),
        }
    }

    pub(super) fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    pub(super) fn link(&self, program: &str) -> PathBuf {
        self.dir.join("links").join(program)
    }

    /// Where a new link is pinned before it is renamed over the old one.
    pub(super) fn staged_link(&self, program: &str) -> PathBuf {
        self.dir.join("next").join(program)
    }

    pub(super) fn complete(&self) -> bool {
        HOOKS.iter().all(|spec| self.link(spec.program).exists()) && self.maps_present()
    }

    /// The maps are pinned: policies can be read and set, events consumed. True in syscall-layer
    /// mode too, where no LSM program is attached.
    pub(super) fn maps_present(&self) -> bool {
        map_names::MAPS.iter().all(|name| self.map(name).exists())
    }

    /// The build whose programs the links hold, as recorded in `BUILD`.
    pub(super) fn build(&self) -> Option<u64> {
        let map = MapData::from_pin(self.map(map_names::MAP_BUILD)).ok()?;
        let build: Array<MapData, u64> = Array::try_from(Map::from_map_data(map).ok()?).ok()?;
        build.get(&0, 0).ok().filter(|id| *id != 0)
    }

    pub(super) fn create_dirs(&self) -> Result<(), LoaderError> {
        for sub in ["maps", "links", "next"] {
            let dir = self.dir.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|err| LoaderError::io(format!("cannot create {}", dir.display()), err))?;
        }
        let _ = fs::set_permissions(PIN_BASE, fs::Permissions::from_mode(0o700));
        Ok(())
    }
}

/// `v<N>` directories under [`PIN_BASE`] that hold any pin, by ABI version.
pub(super) fn pinned_abis() -> Vec<u32> {
    let Ok(entries) = fs::read_dir(PIN_BASE) else {
        return Vec::new();
    };
    let mut found: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| abi_of_dir(&entry.file_name().to_string_lossy()))
        .filter(|version| {
            let pins = Pins::of(*version);
            ["maps", "links", "next"].iter().any(|sub| {
                fs::read_dir(pins.dir.join(sub)).is_ok_and(|mut entries| entries.next().is_some())
            })
        })
        .collect();
    found.sort_unstable();
    found
}

/// The ABI version a pin directory's name (`v1`) stands for.
fn abi_of_dir(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('v')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The newest ABI older than `ours` that has pins, if any.
pub(super) fn older_abi(ours: u32) -> Option<u32> {
    pinned_abis().into_iter().rfind(|v| *v < ours)
}

/// Refuses when pins of a newer ABI are there: their programs would go on enforcing their own
/// maps, which this build cannot read or change.
pub(super) fn refuse_newer_abis(ours: u32) -> Result<(), LoaderError> {
    match pinned_abis().into_iter().rfind(|version| *version > ours) {
        Some(found) => Err(LoaderError::NewerAbi {
            dir: Pins::of(found).dir.display().to_string(),
            found,
            ours,
        }),
        None => Ok(()),
    }
}

/// An older ABI's pins are there, to be migrated by a command that installs.
pub(super) fn older_abi_error(found: u32, ours: u32) -> LoaderError {
    LoaderError::OlderAbi {
        dir: Pins::of(found).dir.display().to_string(),
        found,
        ours,
    }
}

/// Why this build's pins cannot be opened: nothing pinned, or another ABI's pins.
pub(super) fn not_installed(bpf: &Bpf, pins: &Pins) -> LoaderError {
    let ours = bpf.abi();
    if let Err(newer) = refuse_newer_abis(ours) {
        return newer;
    }
    if let Some(found) = older_abi(ours) {
        return older_abi_error(found, ours);
    }
    LoaderError::NotInstalled(pins.dir.display().to_string())
}

/// Serialises every command that changes pinned state. Held until dropped; it carries the
/// [`Bpf`] it was taken for, so what is done under it uses that object and ABI.
pub struct StateLock {
    _flock: Flock<File>,
    bpf: Bpf,
}

impl StateLock {
    pub fn bpf(&self) -> &Bpf {
        &self.bpf
    }
}

impl Bpf {
    /// Takes the state lock ([`STATE_LOCK`]), waiting for the command holding it.
    pub fn lock(&self) -> Result<StateLock, LoaderError> {
        let dir = Path::new(STATE_LOCK).parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(dir)
            .map_err(|err| LoaderError::io(format!("cannot create {}", dir.display()), err))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(STATE_LOCK)
            .map_err(|err| match err.kind() {
                io::ErrorKind::PermissionDenied => LoaderError::NotPrivileged,
                _ => LoaderError::io(format!("cannot open {STATE_LOCK}"), err),
            })?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(|flock| StateLock {
                _flock: flock,
                bpf: *self,
            })
            .map_err(|(_, errno)| {
                LoaderError::io(format!("cannot lock {STATE_LOCK}"), errno.into())
            })
    }

    /// This build's pin directory (for messages).
    pub fn pin_dir(&self) -> PathBuf {
        self.pins().dir
    }

    /// True when this build's ABI is loaded and pinned (every link and map pin is there).
    pub fn programs_pinned(&self) -> bool {
        self.pins().complete()
    }

    /// True when every map of this build's ABI is pinned: enough for the syscall layer, which
    /// needs no LSM program.
    pub fn maps_pinned(&self) -> bool {
        self.pins().maps_present()
    }

    /// How many of this ABI's programs have their link pinned (attached).
    pub fn attached_links(&self) -> usize {
        let pins = self.pins();
        HOOKS
            .iter()
            .filter(|spec| pins.link(spec.program).exists())
            .count()
    }

    /// The kernel id of the pinned event ring buffer, if it is pinned: a consumer compares it
    /// with the id it opened to notice `enforcer reset` (and a later `attach` pinning a new one).
    pub fn pinned_events_id(&self) -> Option<u32> {
        aya::maps::MapInfo::from_pin(self.pins().map(map_names::MAP_EVENTS))
            .ok()
            .map(|info| info.id())
    }

    /// The build whose programs are pinned under this ABI (see [`super::object::build_id`]), if
    /// recorded.
    pub fn pinned_build(&self) -> Option<u64> {
        self.pins().build()
    }
}

/// Removes every pin of every ABI version: programs detach, maps are freed once unreferenced.
pub fn reset(_lock: &StateLock) -> Result<bool, LoaderError> {
    require_root()?;
    let Ok(entries) = fs::read_dir(PIN_BASE) else {
        return Ok(false);
    };
    let mut removed = false;
    for entry in entries.flatten() {
        if abi_of_dir(&entry.file_name().to_string_lossy()).is_none() {
            continue;
        }
        let dir = entry.path();
        fs::remove_dir_all(&dir)
            .map_err(|err| LoaderError::io(format!("cannot remove {}", dir.display()), err))?;
        removed = true;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_directories() {
        assert_eq!(abi_of_dir("v1"), Some(1));
        assert_eq!(abi_of_dir("v12"), Some(12));
        for name in ["v", "x1", "v1a", "v-1", "maps", "v+2"] {
            assert_eq!(abi_of_dir(name), None, "{name}");
        }
    }
}
