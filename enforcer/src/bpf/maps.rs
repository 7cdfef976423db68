//! The pinned maps: opening them with this build's types (which checks the kernel's
//! sizes against them), and the few writes the loader itself makes.
use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf};
use enforcer_common::{
    Budget, Config, Counters, Inflight, Policy, PolicyIndex, ProcessKey, SetupState,
};

use super::{
    Bpf, LoaderError, StateLock,
    kernel::require_root,
    map_names::{
        MAP_BUDGET, MAP_BUILD, MAP_CONFIG, MAP_COUNTERS, MAP_DROPPED, MAP_EVENTS, MAP_INDEX,
        MAP_POLICIES, MAP_PROTECTED, MAP_SETUP, MAP_SYS_INFLIGHT,
    },
    pins::{Pins, not_installed},
};

/// The maps user space changes or reads to manage policies.
pub struct PolicyMaps {
    pub policies: HashMap<MapData, u64, Policy>,
    pub index: Array<MapData, PolicyIndex>,
    pub counters: PerCpuHashMap<MapData, u64, Counters>,
    /// Workload arming's setup processes (read and cleared by `attach`, never filled).
    pub exempt: HashMap<MapData, ProcessKey, SetupState>,
    /// What the maps were opened for: changes that load programs load that object.
    pub(super) bpf: Bpf,
}

/// The maps a consumer of violation events reads.
pub struct EventMaps {
    pub events: RingBuf<MapData>,
    pub dropped: PerCpuArray<MapData, u64>,
}

impl Bpf {
    /// Opens the pinned policy maps; fails if nothing was ever attached.
    pub fn open_policy_maps(&self) -> Result<PolicyMaps, LoaderError> {
        require_root()?;
        let pins = self.pins();
        if !pins.maps_present() {
            return Err(not_installed(self, &pins));
        }
        open_policy_maps(self, &pins)
    }

    /// Opens the pinned maps a consumer of violation events reads.
    pub fn open_event_maps(&self) -> Result<EventMaps, LoaderError> {
        require_root()?;
        let pins = self.pins();
        if !pins.maps_present() {
            return Err(not_installed(self, &pins));
        }
        Ok(EventMaps {
            events: RingBuf::try_from(open_typed(&pins, MAP_EVENTS)?)
                .map_err(|err| layout_err(MAP_EVENTS, err))?,
            dropped: PerCpuArray::try_from(open_typed(&pins, MAP_DROPPED)?)
                .map_err(|err| layout_err(MAP_DROPPED, err))?,
        })
    }
}

fn open_map(pins: &Pins, name: &str) -> Result<MapData, LoaderError> {
    let path = pins.map(name);
    MapData::from_pin(&path)
        .map_err(|err| LoaderError::bpf(format!("cannot open {}", path.display()), err))
}

/// A pinned map as the kernel describes it (its type, key and value sizes come from the kernel,
/// so the typed wrappers below check them against this build's types).
pub(super) fn open_typed(pins: &Pins, name: &str) -> Result<Map, LoaderError> {
    Map::from_map_data(open_map(pins, name)?).map_err(|err| layout_err(name, err))
}

pub(super) fn layout_err(name: &str, err: MapError) -> LoaderError {
    LoaderError::bpf(format!("{name} has an unexpected layout"), err)
}

pub(super) fn open_policy_maps(bpf: &Bpf, pins: &Pins) -> Result<PolicyMaps, LoaderError> {
    Ok(PolicyMaps {
        bpf: *bpf,
        policies: HashMap::try_from(open_typed(pins, MAP_POLICIES)?)
            .map_err(|err| layout_err(MAP_POLICIES, err))?,
        index: Array::try_from(open_typed(pins, MAP_INDEX)?)
            .map_err(|err| layout_err(MAP_INDEX, err))?,
        counters: PerCpuHashMap::try_from(open_typed(pins, MAP_COUNTERS)?)
            .map_err(|err| layout_err(MAP_COUNTERS, err))?,
        exempt: HashMap::try_from(open_typed(pins, MAP_SETUP)?)
            .map_err(|err| layout_err(MAP_SETUP, err))?,
    })
}

/// Checks every map pinned under `pins` against this build's types (map type, key and value
/// sizes), before a new build's programs are bound to them: aya reuses a pinned map as it is.
pub(super) fn check_pinned_maps(pins: &Pins) -> Result<(), LoaderError> {
    fn check<T>(
        pins: &Pins,
        name: &str,
        typed: impl FnOnce(Map) -> Result<T, MapError>,
    ) -> Result<(), String> {
        if !pins.map(name).exists() {
            return Ok(());
        }
        let map = MapData::from_pin(pins.map(name))
            .map_err(|err| format!("{name}: {err}"))
            .and_then(|data| Map::from_map_data(data).map_err(|err| format!("{name}: {err}")))?;
        typed(map).map(drop).map_err(|err| format!("{name}: {err}"))
    }
    let checked = check(pins, MAP_POLICIES, HashMap::<_, u64, Policy>::try_from)
        .and_then(|()| check(pins, MAP_INDEX, Array::<_, PolicyIndex>::try_from))
        .and_then(|()| {
            check(
                pins,
                MAP_COUNTERS,
                PerCpuHashMap::<_, u64, Counters>::try_from,
            )
        })
        .and_then(|()| check(pins, MAP_EVENTS, RingBuf::try_from))
        .and_then(|()| check(pins, MAP_DROPPED, PerCpuArray::<_, u64>::try_from))
        .and_then(|()| check(pins, MAP_CONFIG, Array::<_, Config>::try_from))
        .and_then(|()| {
            check(
                pins,
                MAP_SETUP,
                HashMap::<_, ProcessKey, SetupState>::try_from,
            )
        })
        .and_then(|()| check(pins, MAP_PROTECTED, HashMap::<_, u64, u8>::try_from))
        .and_then(|()| {
            check(
                pins,
                MAP_SYS_INFLIGHT,
                HashMap::<_, u32, Inflight>::try_from,
            )
        })
        .and_then(|()| check(pins, MAP_BUDGET, PerCpuHashMap::<_, u64, Budget>::try_from))
        .and_then(|()| check(pins, MAP_BUILD, Array::<_, u64>::try_from));
    checked.map_err(|detail| LoaderError::AbiMismatch {
        dir: pins.dir.display().to_string(),
        detail,
    })
}

pub(super) fn write_build(pins: &Pins, build: u64) -> Result<(), LoaderError> {
    let mut map: Array<MapData, u64> =
        Array::try_from(open_typed(pins, MAP_BUILD)?).map_err(|err| layout_err(MAP_BUILD, err))?;
    map.set(0, build, 0)
        .map_err(|err| LoaderError::bpf("cannot record the build in BUILD", err))
}

impl PolicyMaps {
    /// Every policy with its cgroup id.
    pub fn policies(&self) -> Result<Vec<(u64, Policy)>, LoaderError> {
        self.policies
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|err| LoaderError::bpf("cannot read the policy map", err))
    }

    /// Rewrites the depth index to cover exactly the policies now in the map (see
    /// [`crate::policy::index_updates`] for the order of writes).
    pub fn write_index(&mut self, updates: &[PolicyIndex]) -> Result<(), LoaderError> {
        for update in updates {
            self.index
                .set(0, update, 0)
                .map_err(|err| LoaderError::bpf("cannot update the policy index", err))?;
        }
        Ok(())
    }

    pub fn current_index(&self) -> Result<PolicyIndex, LoaderError> {
        self.index
            .get(&0, 0)
            .map_err(|err| LoaderError::bpf("cannot read the policy index", err))
    }
}

/// Sets and clears run-time switches ([`enforcer_common::config`] bits); returns the new flags.
pub fn update_config(lock: &StateLock, set: u32, clear: u32) -> Result<u32, LoaderError> {
    require_root()?;
    let pins = lock.bpf().pins();
    if !pins.maps_present() {
        return Err(not_installed(lock.bpf(), &pins));
    }
    let mut config: Array<MapData, Config> = Array::try_from(open_typed(&pins, MAP_CONFIG)?)
        .map_err(|err| layout_err(MAP_CONFIG, err))?;
    let mut value = config
        .get(&0, 0)
        .map_err(|err| LoaderError::bpf("cannot read CONFIG", err))?;
    value.flags = (value.flags | set) & !clear;
    config
        .set(0, value, 0)
        .map_err(|err| LoaderError::bpf("cannot write CONFIG", err))?;
    Ok(value.flags)
}
