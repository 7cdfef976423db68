//! Tamper protection's list of the enforcer's own kernel objects, kept in the pinned
//! `PROTECTED` map that the BPF programs on the `bpf`, `bpf_map`, `bpf_prog` and `inode_*` hooks
//! consult: no process in a covered cgroup may get a descriptor for, change or unpin any of them.
//!
//! The list is made from what the kernel says is pinned, never from names: every link pinned
//! under the ABI's `links/` (its id and its program's), every map those programs use (the
//! unpinned ones included), every map pinned under `maps/`, and the bpffs superblock holding the
//! pins (by device). It is rewritten after every load, upgrade and syscall-layer change; ids that
//! are no longer the enforcer's are removed.
use std::{collections::BTreeSet, fs, os::unix::fs::MetadataExt, path::Path};

use aya::{
    maps::{HashMap, Map, MapData, MapInfo},
    programs::{
        links::{FdLink, PinnedLink},
        loaded_programs,
    },
};
use enforcer_common::protect;

use super::{LoaderError, map_names::MAP_PROTECTED};

/// Rewrites `PROTECTED` under the pin directory `dir` to hold exactly the objects pinned there.
pub fn sync(dir: &Path) -> Result<(), LoaderError> {
    let wanted = objects(dir)?;
    let path = dir.join("maps").join(MAP_PROTECTED);
    let map = MapData::from_pin(&path)
        .map_err(|err| LoaderError::bpf(format!("cannot open {}", path.display()), err))?;
    let map = Map::from_map_data(map)
        .map_err(|err| LoaderError::bpf(format!("cannot open {}", path.display()), err))?;
    let mut map: HashMap<MapData, u64, u8> = HashMap::try_from(map)
        .map_err(|err| LoaderError::bpf(format!("{} has another layout", path.display()), err))?;
    // Add first, then remove: an object stays protected throughout.
    for key in &wanted {
        map.insert(key, 1, 0)
            .map_err(|err| LoaderError::bpf("cannot record the enforcer's objects", err))?;
    }
    let stale: Vec<u64> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|key| !wanted.contains(key))
        .collect();
    for key in stale {
        let _ = map.remove(&key);
    }
    Ok(())
}

/// The keys of every object pinned under `dir` (see the module documentation).
fn objects(dir: &Path) -> Result<BTreeSet<u64>, LoaderError> {
    let mut keys = BTreeSet::new();
    let mut programs = BTreeSet::new();
    for path in entries(&dir.join("links")) {
        let link = PinnedLink::from_pin(&path)
            .map_err(|err| LoaderError::bpf(format!("cannot open {}", path.display()), err))?;
        let info = FdLink::from(link)
            .info()
            .map_err(|err| LoaderError::bpf(format!("cannot read {}", path.display()), err))?;
        keys.insert(protect::key(protect::LINK, info.id()));
        programs.insert(info.program_id());
    }
    for program in loaded_programs().filter_map(Result::ok) {
        if !programs.contains(&program.id()) {
            continue;
        }
        keys.insert(protect::key(protect::PROG, program.id()));
        for map in program.map_ids().ok().flatten().unwrap_or_default() {
            keys.insert(protect::key(protect::MAP, map));
        }
    }
    for path in entries(&dir.join("maps")) {
        if let Ok(info) = MapInfo::from_pin(&path) {
            keys.insert(protect::key(protect::MAP, info.id()));
        }
    }
    let meta = fs::metadata(dir)
        .map_err(|err| LoaderError::io(format!("cannot stat {}", dir.display()), err))?;
    keys.insert(protect::key(protect::BPFFS_DEV, kernel_dev(meta.dev())));
    Ok(keys)
}

/// The files in `dir`, none when it cannot be read.
fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default()
}

/// A device number as the kernel keeps it in `super_block.s_dev` (`MKDEV`: major above 20
/// bits of minor), from the user-space encoding `stat` returns.
fn kernel_dev(dev: u64) -> u32 {
    let major = libc::major(dev) as u32;
    let minor = libc::minor(dev) as u32;
    (major << 20) | (minor & 0xf_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_take_the_kernel_encoding() {
        assert_eq!(kernel_dev(libc::makedev(0, 42)), 42);
        // Minors past 255 are split in the user encoding, whole in the kernel's.
        assert_eq!(kernel_dev(libc::makedev(0, 300)), 300);
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
    }
}
