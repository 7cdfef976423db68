//! The names of the pinned maps (the file names under `maps/` of an ABI directory), in one
//! place that both the pin tree and the map readers use.
pub(super) const MAP_POLICIES: &str = "POLICIES";
pub(super) const MAP_INDEX: &str = "POLICY_INDEX";
pub(super) const MAP_COUNTERS: &str = "COUNTERS";
pub(super) const MAP_EVENTS: &str = "EVENTS";
pub(super) const MAP_DROPPED: &str = "DROPPED";
pub(super) const MAP_CONFIG: &str = "CONFIG";
pub(super) const MAP_SETUP: &str = "SETUP";
/// What older builds called the setup map (with the executable only as its value); removed once
/// this build's programs are in.
pub(super) const MAP_EXEMPT_OLD: &str = "EXEMPT";
/// The pinned maps every build of an ABI version shares.
pub(super) const MAPS: [&str; 7] = [
    MAP_POLICIES,
    MAP_INDEX,
    MAP_COUNTERS,
    MAP_EVENTS,
    MAP_DROPPED,
    MAP_CONFIG,
    MAP_SETUP,
];
/// Which build's programs the links hold; pinned too, but not needed to use the others.
pub(super) const MAP_BUILD: &str = "BUILD";
/// The syscall layer's per-thread records, shared by its programs and the LSM programs,
/// which are loaded at different times: pinned, but not needed to use the others.
pub(super) const MAP_SYS_INFLIGHT: &str = "SYS_INFLIGHT";
/// Tamper protection's list of the enforcer's own kernel objects (see [`super::protect`]).
pub(super) const MAP_PROTECTED: &str = "PROTECTED";
/// The per-policy event budgets, shared by the LSM and syscall-layer programs.
pub(super) const MAP_BUDGET: &str = "BUDGET";
/// Maps every build pins and shares, beside [`MAPS`], that older pins may lack (created then).
pub(super) const SHARED: [&str; 4] = [MAP_BUILD, MAP_SYS_INFLIGHT, MAP_PROTECTED, MAP_BUDGET];
