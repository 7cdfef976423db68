//! Migrating an older map ABI's pins into this build's: the frozen types of each older ABI,
//! their conversion, and the make-before-break move from one pin directory to the other.
use std::{fs, io};

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuHashMap};
#[cfg(test)]
use enforcer_common::ABI_VERSION;
use enforcer_common::{Config, Counters, HOOKS, Policy};

use super::{
    Bpf, LoaderError,
    attach::{attach_pinned, verify_programs},
    error::kernel_btf,
    map_names::{MAP_CONFIG, MAP_COUNTERS, MAP_POLICIES},
    maps::{layout_err, open_policy_maps, open_typed, write_build},
    object::load_object,
    pins::Pins,
};

/// Map ABI v1, frozen: a later ABI reads an old v1 pin set through these types, whatever
/// becomes of the current ones in `enforcer-common`. Keys are cgroup ids (`u64`).
mod v1 {
    pub const OP_SLOTS: usize = 16;

    /// Value of `POLICIES`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Policy {
        pub actions: [u8; OP_SLOTS],
        pub level: u32,
        pub _pad: u32,
    }

    /// Per-CPU value of `COUNTERS`: `by_action[action][operation]`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Counters {
        pub by_action: [[u64; OP_SLOTS]; 4],
    }

    /// Value of `CONFIG` (index 0).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Config {
        pub flags: u32,
        pub _pad: u32,
    }

    const _: () = assert!(size_of::<Policy>() == 24);
    const _: () = assert!(size_of::<Counters>() == 512);
    const _: () = assert!(size_of::<Config>() == 8);

    // SAFETY: integer-only #[repr(C)] structs with explicit padding: every byte pattern is valid.
    unsafe impl aya::Pod for Policy {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Config {}
}

/// ABI versions whose pins this build can migrate (readers in [`read_abi`]).
const MIGRATES_FROM: &[u32] = &[1];

/// What a migration carries from an older ABI's maps into this build's.
#[derive(Debug, Default, PartialEq)]
struct Snapshot {
    policies: Vec<(u64, Policy)>,
    /// Per-CPU counters of each policy cgroup.
    counters: Vec<(u64, Vec<Counters>)>,
    config: Config,
}

/// Reads an older ABI's policies, counters and run-time switches, converted to this build's
/// types. Refuses an ABI it has no reader for, and maps whose sizes are not that ABI's.
fn read_abi(version: u32, pins: &Pins) -> Result<Snapshot, LoaderError> {
    match version {
        1 => read_v1(pins),
        found => Err(LoaderError::UnknownAbi {
            dir: pins.dir.display().to_string(),
            found,
            known: MIGRATES_FROM
                .iter()
                .map(|v| format!("v{v}"))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn read_v1(pins: &Pins) -> Result<Snapshot, LoaderError> {
    let mismatch = |name: &str, err: MapError| LoaderError::AbiMismatch {
        dir: pins.dir.display().to_string(),
        detail: format!("{name} is not layout v1's: {err}"),
    };
    let policies: HashMap<MapData, u64, v1::Policy> =
        HashMap::try_from(open_typed(pins, MAP_POLICIES)?)
            .map_err(|err| mismatch(MAP_POLICIES, err))?;
    let counters: PerCpuHashMap<MapData, u64, v1::Counters> =
        PerCpuHashMap::try_from(open_typed(pins, MAP_COUNTERS)?)
            .map_err(|err| mismatch(MAP_COUNTERS, err))?;
    let config: Array<MapData, v1::Config> =
        Array::try_from(open_typed(pins, MAP_CONFIG)?).map_err(|err| mismatch(MAP_CONFIG, err))?;
    let mut snapshot = Snapshot {
        config: from_v1::config(
            config
                .get(&0, 0)
                .map_err(|err| LoaderError::bpf("cannot read the old CONFIG", err))?,
        ),
        ..Snapshot::default()
    };
    for entry in &policies {
        let (id, policy) =
            entry.map_err(|err| LoaderError::bpf("cannot read the old policies", err))?;
        snapshot.policies.push((id, from_v1::policy(policy)));
        // A policy without counters is possible only in the instant attach or detach makes.
        if let Ok(per_cpu) = counters.get(&id, 0) {
            let per_cpu = per_cpu.iter().copied().map(from_v1::counters).collect();
            snapshot.counters.push((id, per_cpu));
        }
    }
    Ok(snapshot)
}

/// ABI v1 to this build's. Field by field, so an ABI change makes the compiler point
/// here.
mod from_v1 {
    use enforcer_common::{Config, Counters, Policy};

    use super::v1;

    pub fn policy(old: v1::Policy) -> Policy {
        let mut new = Policy {
            level: old.level,
            ..Policy::default()
        };
        let n = new.actions.len().min(old.actions.len());
        new.actions[..n].copy_from_slice(&old.actions[..n]);
        new
    }

    pub fn counters(old: v1::Counters) -> Counters {
        let mut new = Counters::default();
        for (row, old_row) in new.by_action.iter_mut().zip(&old.by_action) {
            let n = row.len().min(old_row.len());
            row[..n].copy_from_slice(&old_row[..n]);
        }
        new
    }

    pub fn config(old: v1::Config) -> Config {
        Config {
            flags: old.flags,
            _pad: 0,
        }
    }
}

/// Writes a snapshot into this build's (new, not yet attached) maps: counters, then policies,
/// then the switches, then the index that makes the policies visible.
fn write_snapshot(bpf: &Bpf, pins: &Pins, snapshot: &Snapshot) -> Result<(), LoaderError> {
    let mut maps = open_policy_maps(bpf, pins)?;
    for (id, per_cpu) in &snapshot.counters {
        let values = aya::maps::PerCpuValues::try_from(per_cpu.clone()).map_err(|err| {
            LoaderError::bpf("the old counters do not fit this machine's CPUs", err)
        })?;
        maps.counters
            .insert(*id, values, 0)
            .map_err(|err| LoaderError::bpf("cannot copy the counters", err))?;
    }
    for (id, policy) in &snapshot.policies {
        maps.policies
            .insert(*id, *policy, 0)
            .map_err(|err| LoaderError::bpf("cannot copy the policies", err))?;
    }
    let mut config: Array<MapData, Config> = Array::try_from(open_typed(pins, MAP_CONFIG)?)
        .map_err(|err| layout_err(MAP_CONFIG, err))?;
    config
        .set(0, snapshot.config, 0)
        .map_err(|err| LoaderError::bpf("cannot copy CONFIG", err))?;
    let placed: Vec<(u64, u32)> = snapshot
        .policies
        .iter()
        .map(|(id, policy)| (*id, policy.level))
        .collect();
    let updates = crate::policy::index_updates(&maps.current_index()?, &placed)
        .map_err(|err| LoaderError::io("cannot index the old policies", io::Error::other(err)))?;
    maps.write_index(&updates)
}

/// Migrates the pins of the older ABI `from` into this build's ABI, with no moment without
/// enforcement: this build is loaded into its own directory on new maps and verified, the
/// policies, counters and switches are copied over, the new programs are attached (both sets
/// run for that moment, each on its own maps holding the same policies), and only then are the
/// old pins removed, which lets the old programs go. Counters carry what the old programs had
/// counted when they were copied; decisions the old programs make between the copy and their
/// release (milliseconds) are counted in the old maps only. Events still in the old ring buffer
/// are not carried over. A failure before the old pins are removed leaves them enforcing and
/// removes this build's new pins.
pub(super) fn migrate(bpf: &Bpf, pins: &Pins, from: u32) -> Result<(), LoaderError> {
    let old = Pins::of(from);
    eprintln!(
        "enforcer: found the pins of map layout v{from} under {}; this build uses layout v{}: migrating them to {}",
        old.dir.display(),
        bpf.abi(),
        pins.dir.display()
    );
    // Refuses an unknown or mismatched old ABI before anything changes.
    read_abi(from, &old)?;
    // Left by an interrupted migration (the old pins were still in force): start over.
    if pins.dir.exists() {
        fs::remove_dir_all(&pins.dir)
            .map_err(|err| LoaderError::io(format!("cannot remove {}", pins.dir.display()), err))?;
    }
    pins.create_dirs()?;
    let result = (|| {
        let btf = kernel_btf()?;
        let mut ebpf = load_object(bpf, pins, &btf)?;
        verify_programs(&mut ebpf, &btf)?;
        // Read now, just before the new programs attach, so the copy is as fresh as it can be.
        let snapshot = read_abi(from, &old)?;
        write_snapshot(bpf, pins, &snapshot)?;
        eprintln!(
            "enforcer: loaded this build's programs on new maps under {} and copied {} policies with their counters from v{from}",
            pins.dir.display(),
            snapshot.policies.len()
        );
        for spec in HOOKS {
            attach_pinned(&mut ebpf, pins, spec)?;
        }
        write_build(pins, bpf.build())
    })();
    if let Err(err) = result {
        let _ = fs::remove_dir_all(&pins.dir);
        return Err(err);
    }
    eprintln!(
        "enforcer: attached this build's {} programs; the v{from} programs run beside them until their pins go",
        HOOKS.len()
    );
    fs::remove_dir_all(&old.dir).map_err(|err| {
        LoaderError::io(
            format!(
                "migrated to {}, but cannot remove the old pins {} (its programs still run beside the new ones); remove that directory",
                pins.dir.display(),
                old.dir.display()
            ),
            err,
        )
    })?;
    eprintln!(
        "enforcer: removed the v{from} pins: upgraded from map layout v{from} to v{}, enforcing throughout",
        bpf.abi()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_reads_into_this_abi_unchanged() {
        // While ABI_VERSION is 1, the frozen v1 types are the current ones, byte for byte (an
        // ABI change replaces this test with one of the conversion it needs).
        if ABI_VERSION != 1 {
            return;
        }
        assert_eq!(size_of::<v1::Policy>(), size_of::<Policy>());
        assert_eq!(size_of::<v1::Counters>(), size_of::<Counters>());
        assert_eq!(size_of::<v1::Config>(), size_of::<Config>());
        let mut old = v1::Policy {
            level: 3,
            ..v1::Policy::default()
        };
        old.actions[0] = 2;
        old.actions[15] = 1;
        let new = from_v1::policy(old);
        assert_eq!(new.actions, old.actions);
        assert_eq!(new.level, 3);
        let mut counts = v1::Counters::default();
        counts.by_action[2][1] = 41;
        counts.by_action[3][15] = 7;
        let new = from_v1::counters(counts);
        assert_eq!(new.by_action, counts.by_action);
        let config = from_v1::config(v1::Config { flags: 5, _pad: 9 });
        assert_eq!((config.flags, config._pad), (5, 0));
        assert_eq!(MIGRATES_FROM, &[1]);
    }
}
