//! Loads, attaches and pins the BPF programs, opens the pinned maps, and replaces another build's
//! programs without a moment of enforcement lost.
//!
//! Everything lives under a bpffs directory named after the map layout
//! ([`enforcer_common::ABI_VERSION`]): `/sys/fs/bpf/enforcer/v1/{maps,links}`. Enforcement
//! outlives every `enforcer` process, and a build with another layout never reuses an old map.
//! The `BUILD` map records which build's programs the links hold (a hash of the BPF object, see
//! [`build_id`]); it is written after the last link is pinned.
//!
//! [`install`] (used by attach, apply, daemon and check) brings the kernel to this build's
//! programs:
//! - this build's programs are pinned: they are adopted as they are;
//! - nothing is pinned: the programs are loaded, attached and pinned;
//! - another build's programs of the same layout are pinned: [`replace_programs`] loads this
//!   build's programs on the pinned maps (policies, counters, ring buffer and all), then per hook
//!   attaches the new program, pins its link in `next/` and renames that pin over the old one, so
//!   at every instant each hook has at least one program;
//! - an older layout's pins are there: [`migrate`] loads this build into its own directory, copies
//!   the policies and counters over, attaches the new links, and only then removes the old pins;
//! - a newer layout's pins are there: refused (this build cannot read their maps).
use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::OnceLock,
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        FEntry, Lsm, Program, ProgramError, RawTracePoint, links::FdLink, links::PinnedLink,
    },
};
use enforcer_common::{
    ABI_VERSION, Attach, Config, Counters, HOOKS, Hook, HookSpec, KernelLayout, Policy,
    PolicyIndex, ProcessKey, SYSCALL_HOOKS, SetupState, policy_flags,
};
use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

/// The BPF object built by build.rs from the `enforcer-ebpf` crate.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer"));

pub const PIN_BASE: &str = "/sys/fs/bpf/enforcer";
const BPF_FS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const SECURITYFS: &str = "/sys/kernel/security";
const LOCK_FILE: &str = "/run/enforcer.lock";

const MAP_POLICIES: &str = "POLICIES";
const MAP_INDEX: &str = "POLICY_INDEX";
const MAP_COUNTERS: &str = "COUNTERS";
const MAP_EVENTS: &str = "EVENTS";
const MAP_DROPPED: &str = "DROPPED";
const MAP_CONFIG: &str = "CONFIG";
const MAP_SETUP: &str = "SETUP";
/// What older builds called the setup map (with the executable only as its value); removed once
/// this build's programs are in.
const MAP_EXEMPT_OLD: &str = "EXEMPT";
/// The pinned maps every build of a layout shares.
const MAPS: [&str; 7] = [
    MAP_POLICIES,
    MAP_INDEX,
    MAP_COUNTERS,
    MAP_EVENTS,
    MAP_DROPPED,
    MAP_CONFIG,
    MAP_SETUP,
];
/// Which build's programs the links hold; pinned too, but not needed to use the others.
const MAP_BUILD: &str = "BUILD";
/// The syscall layer's per-thread records, shared by its programs and the LSM programs,
/// which are loaded at different times: pinned, but not needed to use the others.
const MAP_SYS_INFLIGHT: &str = "SYS_INFLIGHT";
/// Tamper protection's list of the enforcer's own kernel objects (see [`crate::protect`]).
pub(crate) const MAP_PROTECTED: &str = "PROTECTED";
/// The per-policy event budgets, shared by the LSM and syscall-layer programs.
const MAP_BUDGET: &str = "BUDGET";
/// Maps every build pins and shares, beside [`MAPS`], that older pins may lack (created then).
const SHARED: [&str; 4] = [MAP_BUILD, MAP_SYS_INFLIGHT, MAP_PROTECTED, MAP_BUDGET];

#[derive(Debug, Error)]
pub enum LoaderError {
    #[error("this needs root (CAP_SYS_ADMIN and CAP_BPF); run it as root")]
    NotPrivileged,
    #[error(
        "BPF LSM is not active on this kernel (active LSMs: {0}); add bpf to the boot parameter: lsm={0},bpf"
    )]
    LsmInactive(String),
    #[error(
        "this kernel refused to load the BPF LSM program '{0}' (EPERM before verification): {1}"
    )]
    LsmRefused(&'static str, crate::refusal::Refusal),
    #[error("the kernel has no LSM hook '{hook}' for program '{program}': {source}")]
    MissingHook {
        program: &'static str,
        hook: &'static str,
        source: ProgramError,
    },
    #[error("the verifier rejected program '{program}': {source}")]
    Rejected {
        program: &'static str,
        source: ProgramError,
    },
    #[error("nothing is enforced yet (no pins under {0}); start with `enforcer attach`")]
    NotInstalled(String),
    #[error(
        "the pins under {dir} are of map layout v{found}, newer than this enforcer's v{ours}, whose maps it cannot read; run the newer enforcer, or `enforcer reset` to remove every program and policy and start over"
    )]
    NewerLayout { dir: String, found: u32, ours: u32 },
    #[error(
        "the pins under {dir} are of the older map layout v{found} (this enforcer's is v{ours}); run `enforcer check`, `enforcer attach` or `enforcer daemon` of this enforcer to migrate them (policies and counters are carried over)"
    )]
    OlderLayout { dir: String, found: u32, ours: u32 },
    #[error(
        "the pins under {dir} are of map layout v{found}, which this enforcer cannot migrate (it reads {known}); run `enforcer reset` to remove every program and policy and start over"
    )]
    UnknownLayout {
        dir: String,
        found: u32,
        known: String,
    },
    #[error(
        "the maps pinned under {dir} do not have the layout this build expects ({detail}): the build that pinned them changed a map without changing ABI_VERSION; nothing was changed; run `enforcer reset` (every policy is removed) and attach again"
    )]
    LayoutMismatch { dir: String, detail: String },
    #[error(
        "the upgrade stopped after replacing {replaced} of {of} programs (the others are still the previous build's, on the same maps, so every hook enforces); run the command again to finish: {source}"
    )]
    PartlyReplaced {
        replaced: usize,
        of: usize,
        source: Box<LoaderError>,
    },
    #[error(
        "kernel BTF is unavailable at /sys/kernel/btf/vmlinux ({0}); a kernel with CONFIG_DEBUG_INFO_BTF=y is needed"
    )]
    NoBtf(String),
    #[error(transparent)]
    KernelLayout(#[from] crate::kernel_layout::LayoutError),
    #[error("the BPF object has no {0} '{1}'; the build is broken, rebuild enforcer")]
    BrokenObject(&'static str, &'static str),
    #[error("{what}: {source}")]
    Bpf {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn bpf_err(
    what: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> LoaderError {
    LoaderError::Bpf {
        what: what.into(),
        source: Box::new(source),
    }
}

fn io_err(what: impl Into<String>, source: io::Error) -> LoaderError {
    LoaderError::Io {
        what: what.into(),
        source,
    }
}

impl LoaderError {
    pub(crate) fn bpf(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        bpf_err(what, source)
    }

    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        io_err(what, source)
    }
}

// ---------------------------------------------------------------------------------------------
// Build identity and the test-only overrides.

/// Set by the hidden `--bpf-object` option: the BPF object to load instead of the embedded one.
static OBJECT_FILE: OnceLock<&'static [u8]> = OnceLock::new();
/// Set by the hidden `--test-layout` option: the layout this build pretends to have.
static TEST_LAYOUT: OnceLock<u32> = OnceLock::new();

/// The BPF object this process loads.
fn object() -> &'static [u8] {
    OBJECT_FILE.get().copied().unwrap_or(BPF_OBJECT)
}

/// The map layout this process uses (and the name of its pin directory).
fn layout() -> u32 {
    TEST_LAYOUT.get().copied().unwrap_or(ABI_VERSION)
}

/// VM tests only (hidden `--bpf-object FILE`): load the programs from a BPF object file instead
/// of the embedded one, so that one binary can act as a second build (`cargo xtask test` builds
/// one whose `capable` program differs).
pub fn use_object_file(path: &Path) -> Result<(), LoaderError> {
    /// The ELF parser reads the object in place and wants it aligned, as the embedded one is.
    #[repr(C, align(32))]
    #[derive(Clone, Copy)]
    struct Chunk([u8; 32]);
    let bytes =
        fs::read(path).map_err(|err| io_err(format!("cannot read {}", path.display()), err))?;
    let mut chunks = vec![Chunk([0; 32]); bytes.len().div_ceil(32)].into_boxed_slice();
    // SAFETY: the chunks span at least `bytes.len()` initialised bytes; u8 needs no alignment.
    unsafe { std::slice::from_raw_parts_mut(chunks.as_mut_ptr().cast::<u8>(), bytes.len()) }
        .copy_from_slice(&bytes);
    let chunks: &'static [Chunk] = Box::leak(chunks);
    // SAFETY: as above, over the leaked allocation, which lives as long as the process.
    let object = unsafe { std::slice::from_raw_parts(chunks.as_ptr().cast::<u8>(), bytes.len()) };
    let _ = OBJECT_FILE.set(object);
    Ok(())
}

/// VM tests only (hidden `--test-layout N`, N = ABI_VERSION + 1): act as the next map layout, so
/// the pins of this build's real layout are an older layout to migrate. The maps keep this
/// build's types; the pin directory and the migration path are the real ones.
pub fn pretend_layout(version: u32) -> Result<(), LoaderError> {
    if version != ABI_VERSION + 1 {
        return Err(io_err(
            format!("--test-layout {version}"),
            io::Error::other(format!(
                "only the next layout, {}, can be pretended",
                ABI_VERSION + 1
            )),
        ));
    }
    let _ = TEST_LAYOUT.set(version);
    Ok(())
}

/// The identity of a build's programs: 64-bit FNV-1a over the BPF object, taken as
/// little-endian 8-byte words (the last one zero-padded), then over its length. Any change to
/// any program changes the object, and so the hash; a rebuild that changes only the debug
/// information changes it too, which costs one needless (gapless) replacement. Never 0, which
/// the `BUILD` map holds when it says nothing.
pub fn build_id(object: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut chunks = object.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        hash = (hash ^ word).wrapping_mul(PRIME);
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    hash = (hash ^ u64::from_le_bytes(last)).wrapping_mul(PRIME);
    hash = (hash ^ object.len() as u64).wrapping_mul(PRIME);
    hash.max(1)
}

fn our_build() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| build_id(object()))
}

/// How a build is named in messages.
fn build_name(build: Option<u64>) -> String {
    match build {
        Some(build) => format!("build {build:016x}"),
        None => "a build that recorded no identity".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Pins.

/// Paths of one layout's pins.
pub struct Pins {
    dir: PathBuf,
}

impl Pins {
    /// This build's pins.
    pub fn new() -> Self {
        Self::of(layout())
    }

    fn of(version: u32) -> Self {
        Self {
            dir: Path::new(PIN_BASE).join(format!("v{version}")),
        }
    }

    fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    fn link(&self, program: &str) -> PathBuf {
        self.dir.join("links").join(program)
    }

    /// Where a new link is pinned before it is renamed over the old one.
    fn staged_link(&self, program: &str) -> PathBuf {
        self.dir.join("next").join(program)
    }

    fn complete(&self) -> bool {
        HOOKS.iter().all(|spec| self.link(spec.program).exists()) && self.maps_present()
    }

    /// The maps are pinned: policies can be read and set, events consumed. True in syscall-layer
    /// mode (#6) too, where no LSM program is attached.
    fn maps_present(&self) -> bool {
        MAPS.iter().all(|name| self.map(name).exists())
    }

    /// The build whose programs the links hold, as recorded in `BUILD`.
    fn build(&self) -> Option<u64> {
        let map = MapData::from_pin(self.map(MAP_BUILD)).ok()?;
        let build: Array<MapData, u64> = Array::try_from(Map::from_map_data(map).ok()?).ok()?;
        build.get(&0, 0).ok().filter(|id| *id != 0)
    }

    fn create_dirs(&self) -> Result<(), LoaderError> {
        for sub in ["maps", "links", "next"] {
            let dir = self.dir.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|err| io_err(format!("cannot create {}", dir.display()), err))?;
        }
        let _ = fs::set_permissions(PIN_BASE, fs::Permissions::from_mode(0o700));
        Ok(())
    }
}

/// This build's pin directory (for messages).
pub fn pin_dir() -> PathBuf {
    Pins::new().dir
}

/// `v<N>` directories under [`PIN_BASE`] that hold any pin, by layout version.
fn pinned_layouts() -> Vec<u32> {
    let Ok(entries) = fs::read_dir(PIN_BASE) else {
        return Vec::new();
    };
    let mut found: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| layout_of_dir(&entry.file_name().to_string_lossy()))
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

/// The layout version a pin directory's name (`v1`) stands for.
fn layout_of_dir(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('v')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Refuses when pins of a newer layout are there: their programs would go on enforcing their own
/// maps, which this build cannot read or change.
fn refuse_newer_layouts() -> Result<(), LoaderError> {
    match pinned_layouts()
        .into_iter()
        .rfind(|version| *version > layout())
    {
        Some(found) => Err(LoaderError::NewerLayout {
            dir: Pins::of(found).dir.display().to_string(),
            found,
            ours: layout(),
        }),
        None => Ok(()),
    }
}

/// Why this build's pins cannot be opened: nothing pinned, or another layout's pins.
fn not_installed(pins: &Pins) -> LoaderError {
    let ours = layout();
    let layouts = pinned_layouts();
    if let Some(found) = layouts.iter().copied().rfind(|v| *v > ours) {
        return LoaderError::NewerLayout {
            dir: Pins::of(found).dir.display().to_string(),
            found,
            ours,
        };
    }
    if let Some(found) = layouts.iter().copied().rfind(|v| *v < ours) {
        return LoaderError::OlderLayout {
            dir: Pins::of(found).dir.display().to_string(),
            found,
            ours,
        };
    }
    LoaderError::NotInstalled(pins.dir.display().to_string())
}

// ---------------------------------------------------------------------------------------------
// Opening pinned maps.

/// The maps user space changes or reads to manage policies.
pub struct PolicyMaps {
    pub policies: HashMap<MapData, u64, Policy>,
    pub index: Array<MapData, PolicyIndex>,
    pub counters: PerCpuHashMap<MapData, u64, Counters>,
    /// Workload arming's setup processes (read and cleared by `attach`, never filled).
    pub exempt: HashMap<MapData, ProcessKey, SetupState>,
}

/// The maps a consumer of violation events reads.
pub struct EventMaps {
    pub events: RingBuf<MapData>,
    pub dropped: PerCpuArray<MapData, u64>,
}

/// Serialises every command that changes pinned state. Held until dropped.
pub struct StateLock(#[allow(dead_code)] Flock<File>);

pub fn lock() -> Result<StateLock, LoaderError> {
    let dir = Path::new(LOCK_FILE).parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir)
        .map_err(|err| io_err(format!("cannot create {}", dir.display()), err))?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(|err| match err.kind() {
            io::ErrorKind::PermissionDenied => LoaderError::NotPrivileged,
            _ => io_err(format!("cannot open {LOCK_FILE}"), err),
        })?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map(StateLock)
        .map_err(|(_, errno)| io_err(format!("cannot lock {LOCK_FILE}"), errno.into()))
}

/// Opens the pinned policy maps, bringing the kernel to this build's programs first (loading,
/// replacing or migrating them, see the module documentation). The caller holds the
/// [`StateLock`].
pub fn install(lock: &StateLock) -> Result<PolicyMaps, LoaderError> {
    install_reporting(lock).map(|(maps, _)| maps)
}

/// What [`install`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// This build's programs were pinned: adopted as they were.
    Adopted,
    /// Nothing was pinned: loaded, attached and pinned.
    Loaded,
    /// Some of this layout's pins were missing: the programs were loaded on the pinned maps and
    /// every link pinned anew.
    Repaired,
    /// Another build's programs of this layout: replaced in place, maps kept.
    Upgraded,
    /// An older layout's pins: migrated into this layout's, then removed.
    Migrated { from: u32 },
}

impl Installed {
    /// What the daemon says it did with the pins, before their directory.
    pub fn describe(self) -> String {
        match self {
            Self::Adopted => "adopted the pinned programs under".to_owned(),
            Self::Loaded => "loaded and pinned the programs under".to_owned(),
            Self::Repaired => "repaired the pins under".to_owned(),
            Self::Upgraded => "replaced another build's pinned programs in place under".to_owned(),
            Self::Migrated { from } => format!("migrated the pins of map layout v{from} to"),
        }
    }
}

/// [`install`], also saying what it did. Each step of an upgrade prints one line on stderr. The
/// syscall layer is brought in line with the policies afterwards (a migration does not carry its
/// links over).
pub fn install_reporting(lock: &StateLock) -> Result<(PolicyMaps, Installed), LoaderError> {
    let (maps, installed) = install_lsm(lock)?;
    sync_syscall_layer(&maps)?;
    Ok((maps, installed))
}

fn install_lsm(_lock: &StateLock) -> Result<(PolicyMaps, Installed), LoaderError> {
    require_root()?;
    refuse_newer_layouts()?;
    let pins = Pins::new();
    let ours = our_build();
    if pins.complete() {
        finish_migration()?;
    }
    let installed = if pins.complete() {
        match pins.build() {
            Some(build) if build == ours => Installed::Adopted,
            previous => {
                eprintln!(
                    "enforcer: the programs pinned under {} are another build's ({}; this is {}): replacing them in place, on the same maps",
                    pins.dir.display(),
                    build_name(previous),
                    build_name(Some(ours)),
                );
                prepare_kernel()?;
                let swapped = replace_programs(&pins).inspect_err(|err| {
                    if !matches!(err, LoaderError::PartlyReplaced { .. }) {
                        eprintln!(
                            "enforcer: nothing was replaced: the programs of {} stay in force",
                            build_name(previous)
                        );
                    }
                })?;
                let maps = open_policy_maps(&pins)?;
                eprintln!(
                    "enforcer: upgraded the programs in place: {} links replaced, each new program attached before its old one was let go; maps, {} policies and their counters kept",
                    swapped.replaced + swapped.added,
                    maps.policies()?.len()
                );
                return Ok((maps, Installed::Upgraded));
            }
        }
    } else if let Some(from) = pinned_layouts().into_iter().rfind(|v| *v < layout()) {
        prepare_kernel()?;
        migrate(&pins, from)?;
        Installed::Migrated { from }
    } else {
        prepare_kernel()?;
        let swapped = replace_programs(&pins)?;
        if swapped.replaced == 0 && swapped.kept_maps == 0 {
            Installed::Loaded
        } else {
            eprintln!(
                "enforcer: repaired the incomplete pins under {}: {} links pinned anew, {} pinned maps kept",
                pins.dir.display(),
                swapped.replaced + swapped.added,
                swapped.kept_maps
            );
            Installed::Repaired
        }
    };
    Ok((open_policy_maps(&pins)?, installed))
}

/// Removes older layouts' pins left beside this layout's complete ones: a migration whose last
/// step failed. Their programs still run on maps nobody updates any more.
fn finish_migration() -> Result<(), LoaderError> {
    for old in pinned_layouts().into_iter().filter(|v| *v < layout()) {
        let dir = Pins::of(old).dir;
        fs::remove_dir_all(&dir)
            .map_err(|err| io_err(format!("cannot remove the old pins {}", dir.display()), err))?;
        eprintln!(
            "enforcer: removed the leftover pins of map layout v{old} under {} (a migration to v{} had not finished)",
            dir.display(),
            layout()
        );
    }
    Ok(())
}

/// Mounts bpffs if needed and checks that BPF LSM is active.
fn prepare_kernel() -> Result<(), LoaderError> {
    ensure_bpffs()?;
    check_lsm_active()
}

/// Opens the pinned policy maps; fails if nothing was ever attached.
pub fn open_policy_maps_existing() -> Result<PolicyMaps, LoaderError> {
    require_root()?;
    let pins = Pins::new();
    if !pins.maps_present() {
        return Err(not_installed(&pins));
    }
    open_policy_maps(&pins)
}

pub fn open_event_maps() -> Result<EventMaps, LoaderError> {
    require_root()?;
    let pins = Pins::new();
    if !pins.maps_present() {
        return Err(not_installed(&pins));
    }
    Ok(EventMaps {
        events: RingBuf::try_from(open_typed(&pins, MAP_EVENTS)?)
            .map_err(|err| layout_err(MAP_EVENTS, err))?,
        dropped: PerCpuArray::try_from(open_typed(&pins, MAP_DROPPED)?)
            .map_err(|err| layout_err(MAP_DROPPED, err))?,
    })
}

fn open_map(pins: &Pins, name: &str) -> Result<MapData, LoaderError> {
    let path = pins.map(name);
    MapData::from_pin(&path).map_err(|err| bpf_err(format!("cannot open {}", path.display()), err))
}

/// A pinned map as the kernel describes it (its type, key and value sizes come from the kernel,
/// so the typed wrappers below check them against this build's types).
fn open_typed(pins: &Pins, name: &str) -> Result<Map, LoaderError> {
    Map::from_map_data(open_map(pins, name)?).map_err(|err| layout_err(name, err))
}

fn layout_err(name: &str, err: MapError) -> LoaderError {
    bpf_err(format!("{name} has an unexpected layout"), err)
}

fn open_policy_maps(pins: &Pins) -> Result<PolicyMaps, LoaderError> {
    Ok(PolicyMaps {
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
fn check_pinned_layout(pins: &Pins) -> Result<(), LoaderError> {
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
        .and_then(|()| check(pins, MAP_BUILD, Array::<_, u64>::try_from));
    checked.map_err(|detail| LoaderError::LayoutMismatch {
        dir: pins.dir.display().to_string(),
        detail,
    })
}

fn require_root() -> Result<(), LoaderError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(LoaderError::NotPrivileged)
    }
}

fn ensure_bpffs() -> Result<(), LoaderError> {
    let is_bpffs =
        nix::sys::statfs::statfs(BPF_FS).is_ok_and(|fs| fs.filesystem_type().0 == BPF_FS_MAGIC);
    if !is_bpffs {
        nix::mount::mount(
            Some("bpf"),
            BPF_FS,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|errno| io_err(format!("cannot mount bpffs on {BPF_FS}"), errno.into()))?;
    }
    Ok(())
}

/// Reads the active LSM list, mounting securityfs if needed. When the list cannot be read at all,
/// the program load below is the judge.
fn check_lsm_active() -> Result<(), LoaderError> {
    match active_lsms() {
        Ok(active) if !active.split(',').any(|lsm| lsm == "bpf") => {
            Err(LoaderError::LsmInactive(active))
        }
        _ => Ok(()),
    }
}

/// The active LSM list (`/sys/kernel/security/lsm`, comma separated, trimmed), mounting
/// securityfs there first if it is not mounted.
pub fn active_lsms() -> io::Result<String> {
    let list = Path::new(SECURITYFS).join("lsm");
    if !list.exists() {
        let _ = nix::mount::mount(
            Some("securityfs"),
            SECURITYFS,
            Some("securityfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    fs::read_to_string(&list).map(|active| active.trim().to_owned())
}

/// True when this build's layout is loaded and pinned (every link and map pin is there).
pub fn installed() -> bool {
    Pins::new().complete()
}

/// How many of this layout's programs have their link pinned (attached).
pub fn attached_links() -> usize {
    let pins = Pins::new();
    HOOKS
        .iter()
        .filter(|spec| pins.link(spec.program).exists())
        .count()
}

/// The kernel id of the pinned event ring buffer, if it is pinned: a consumer compares it with
/// the id it opened to notice `enforcer reset` (and a later `attach` pinning a new one).
pub fn pinned_events_id() -> Option<u32> {
    aya::maps::MapInfo::from_pin(Pins::new().map(MAP_EVENTS))
        .ok()
        .map(|info| info.id())
}

/// The build whose programs are pinned under this layout (see [`build_id`]), if recorded.
pub fn pinned_build() -> Option<u64> {
    Pins::new().build()
}

/// This process's build (see [`build_id`]).
pub fn this_build() -> u64 {
    our_build()
}

// ---------------------------------------------------------------------------------------------
// Loading and attaching.

/// Parses the BPF object with every shared map bound to its pin under `pins`: a pinned map is
/// reused as it is (with its contents), a missing one is created and pinned.
fn load_object(pins: &Pins, btf: &Btf) -> Result<Ebpf, LoaderError> {
    let mut loader = EbpfLoader::new();
    loader.btf(Some(btf));
    loader.override_global("LAYOUT", kernel_layout()?, true);
    for name in MAPS.into_iter().chain(SHARED) {
        loader.map_pin_path(name, pins.map(name));
    }
    loader
        .load(object())
        .map_err(|err| bpf_err("cannot load the BPF object", err))
}

/// The running kernel's field offsets, read once per process.
fn kernel_layout() -> Result<&'static KernelLayout, LoaderError> {
    static LAYOUT: OnceLock<KernelLayout> = OnceLock::new();
    if let Some(layout) = LAYOUT.get() {
        return Ok(layout);
    }
    let layout = crate::kernel_layout::from_sys_fs()?;
    Ok(LAYOUT.get_or_init(|| layout))
}

/// Loads every hook's program into the kernel (the verifier runs here). Nothing is attached yet,
/// so a refusal changes nothing.
fn verify_programs(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), LoaderError> {
    for spec in HOOKS {
        verify_program(ebpf, btf, spec)?;
    }
    Ok(())
}

fn program<'a>(ebpf: &'a mut Ebpf, spec: &HookSpec) -> Result<&'a mut Program, LoaderError> {
    ebpf.program_mut(spec.program)
        .ok_or(LoaderError::BrokenObject("program", spec.program))
}

fn wrong_kind(spec: &HookSpec, err: ProgramError) -> LoaderError {
    bpf_err(
        format!(
            "program {} is not of the kind its table row says ({:?})",
            spec.program, spec.attach
        ),
        err,
    )
}

fn verify_program(ebpf: &mut Ebpf, btf: &Btf, spec: &HookSpec) -> Result<(), LoaderError> {
    let program = program(ebpf, spec)?;
    let loaded = match spec.attach {
        Attach::Lsm(hook) => <&mut Lsm>::try_from(program)
            .map_err(|err| wrong_kind(spec, err))?
            .load(hook, btf),
        Attach::RawTracepoint(_) => <&mut RawTracePoint>::try_from(program)
            .map_err(|err| wrong_kind(spec, err))?
            .load(),
        Attach::Fentry(function) => <&mut FEntry>::try_from(program)
            .map_err(|err| wrong_kind(spec, err))?
            .load(function, btf),
    };
    loaded.map_err(|err| classify_load_error(spec.program, spec.attach.point(), err))
}

fn attach(ebpf: &mut Ebpf, spec: &HookSpec) -> Result<FdLink, LoaderError> {
    let program = program(ebpf, spec)?;
    let attach_err = |err| bpf_err(format!("cannot attach {}", spec.program), err);
    let link_err = |err| bpf_err(format!("cannot take link of {}", spec.program), err);
    match spec.attach {
        Attach::Lsm(_) => {
            let program = <&mut Lsm>::try_from(program).map_err(|err| wrong_kind(spec, err))?;
            let id = program.attach().map_err(attach_err)?;
            program.take_link(id).map(FdLink::from).map_err(link_err)
        }
        Attach::RawTracepoint(tracepoint) => {
            let program =
                <&mut RawTracePoint>::try_from(program).map_err(|err| wrong_kind(spec, err))?;
            let id = program.attach(tracepoint).map_err(attach_err)?;
            program.take_link(id).map(FdLink::from).map_err(link_err)
        }
        Attach::Fentry(_) => {
            let program = <&mut FEntry>::try_from(program).map_err(|err| wrong_kind(spec, err))?;
            let id = program.attach().map_err(attach_err)?;
            program.take_link(id).map(FdLink::from).map_err(link_err)
        }
    }
}

/// Attaches `spec`'s program and pins its link under `pins`, over the link pinned there before
/// (see [`swap_link`]).
fn attach_pinned(ebpf: &mut Ebpf, pins: &Pins, spec: &HookSpec) -> Result<Swap, LoaderError> {
    let link = attach(ebpf, spec)?;
    swap_link(
        link,
        &pins.staged_link(spec.program),
        &pins.link(spec.program),
    )
}

/// How a link got to its pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Swap {
    /// The pin was free.
    Added,
    /// The pin held another program's link, which was let go after the new one was pinned.
    Replaced,
}

/// Pins `link` (attached already) at `current`. When `current` holds an older link, the new one is
/// pinned at `staged` first and renamed over the old one: the rename is atomic, so the pin always
/// holds one of the two links, and the kernel releases the old link (and detaches its program)
/// once its pin is gone. For that instant both programs run on the hook; a denial by the first
/// one ends the call there, an audited call is counted and reported by both.
fn swap_link(link: FdLink, staged: &Path, current: &Path) -> Result<Swap, LoaderError> {
    let pin_err = |path: &Path, err| bpf_err(format!("cannot pin {}", path.display()), err);
    if fs::symlink_metadata(current).is_err() {
        link.pin(current).map_err(|err| pin_err(current, err))?;
        return Ok(Swap::Added);
    }
    let _ = fs::remove_file(staged);
    let pinned = link.pin(staged).map_err(|err| pin_err(staged, err))?;
    if fs::rename(staged, current).is_ok() {
        return Ok(Swap::Replaced);
    }
    // A bpffs without rename: the new link stays pinned at `staged` while the old pin goes, then
    // it is pinned at `current` too.
    fs::remove_file(current)
        .map_err(|err| io_err(format!("cannot remove {}", current.display()), err))?;
    FdLink::from(pinned)
        .pin(current)
        .map_err(|err| pin_err(current, err))?;
    let _ = fs::remove_file(staged);
    Ok(Swap::Replaced)
}

/// Finishes what an interrupted replacement left in `next/`: a staged link whose final pin
/// exists is dropped (the final pin enforces), one whose final pin is missing takes its place.
fn recover_staged_links(pins: &Pins) -> Result<(), LoaderError> {
    for spec in HOOKS {
        let staged = pins.staged_link(spec.program);
        if fs::symlink_metadata(&staged).is_err() {
            continue;
        }
        let current = pins.link(spec.program);
        if current.exists() {
            let _ = fs::remove_file(&staged);
            continue;
        }
        let link = PinnedLink::from_pin(&staged)
            .map_err(|err| bpf_err(format!("cannot open {}", staged.display()), err))?;
        swap_link(FdLink::from(link), &staged, &current)?;
        let _ = fs::remove_file(&staged);
    }
    Ok(())
}

/// What [`replace_programs`] did.
struct Replaced {
    /// Link pins that held another program's link.
    replaced: usize,
    /// Link pins that were missing.
    added: usize,
    /// Map pins that were there and were reused.
    kept_maps: usize,
}

/// Loads this build's programs on this layout's pinned maps (creating the missing ones), attaches
/// them and pins their links, replacing any link that is there make-before-break
/// ([`swap_link`]), then records this build in `BUILD`. Used for a fresh install (nothing pinned),
/// a repair (some pins missing) and an upgrade in place (another build's programs).
///
/// Nothing is attached until every program passed the verifier, so a refusal leaves the kernel
/// as it was (a fresh install removes what it pinned). A failure while links are being replaced
/// leaves some hooks with the new build's programs and the rest with the old one's, all on the
/// same maps; `BUILD` still names the old build, so the next `install` finishes the job.
fn replace_programs(pins: &Pins) -> Result<Replaced, LoaderError> {
    let fresh = !pins.dir.exists();
    pins.create_dirs()?;
    let result = (|| {
        recover_staged_links(pins)?;
        check_pinned_layout(pins)?;
        let kept_maps = MAPS.iter().filter(|name| pins.map(name).exists()).count();
        let btf = Btf::from_sys_fs().map_err(|err| LoaderError::NoBtf(err.to_string()))?;
        let mut ebpf = load_object(pins, &btf)?;
        verify_programs(&mut ebpf, &btf)?;
        // The syscall layer's links, where pinned, are replaced with the rest (#6).
        let on_demand: Vec<&HookSpec> = SYSCALL_HOOKS
            .iter()
            .filter(|spec| fs::symlink_metadata(pins.link(spec.program)).is_ok())
            .collect();
        for spec in &on_demand {
            verify_program(&mut ebpf, &btf, spec)?;
        }
        let mut done = Replaced {
            replaced: 0,
            added: 0,
            kept_maps,
        };
        for spec in HOOKS {
            let swapped = attach_pinned(&mut ebpf, pins, spec);
            match swapped {
                Ok(Swap::Added) => done.added += 1,
                Ok(Swap::Replaced) => done.replaced += 1,
                Err(err) if done.replaced > 0 => {
                    return Err(LoaderError::PartlyReplaced {
                        replaced: done.replaced,
                        of: HOOKS.len(),
                        source: Box::new(err),
                    });
                }
                Err(err) => return Err(err),
            }
        }
        for spec in on_demand {
            attach_pinned(&mut ebpf, pins, spec)?;
            done.replaced += 1;
        }
        write_build(pins, our_build())?;
        // The older builds' setup map: their programs are gone, and with them its last user.
        let _ = fs::remove_file(pins.map(MAP_EXEMPT_OLD));
        Ok(done)
    })();
    if result.is_err() && fresh {
        let _ = fs::remove_dir_all(&pins.dir);
    }
    result
}

fn write_build(pins: &Pins, build: u64) -> Result<(), LoaderError> {
    let mut map: Array<MapData, u64> =
        Array::try_from(open_typed(pins, MAP_BUILD)?).map_err(|err| layout_err(MAP_BUILD, err))?;
    map.set(0, build, 0)
        .map_err(|err| bpf_err("cannot record the build in BUILD", err))
}

fn classify_load_error(
    program: &'static str,
    hook: &'static str,
    err: ProgramError,
) -> LoaderError {
    match &err {
        ProgramError::LoadError { io_error, .. }
            if io_error.raw_os_error() == Some(libc::EPERM) =>
        {
            LoaderError::LsmRefused(program, crate::refusal::Refusal::find())
        }
        ProgramError::Btf(_) => LoaderError::MissingHook {
            program,
            hook,
            source: err,
        },
        _ => LoaderError::Rejected {
            program,
            source: err,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Layout migration.

/// Map layout v1, frozen: a later layout reads an old v1 pin set through these types, whatever
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

/// Layouts whose pins this build can migrate (readers in [`read_layout`]).
const MIGRATES_FROM: &[u32] = &[1];

/// What a migration carries from an older layout's maps into this build's.
#[derive(Debug, Default, PartialEq)]
struct Snapshot {
    policies: Vec<(u64, Policy)>,
    /// Per-CPU counters of each policy cgroup.
    counters: Vec<(u64, Vec<Counters>)>,
    config: Config,
}

/// Reads an older layout's policies, counters and run-time switches, converted to this build's
/// types. Refuses a layout it has no reader for, and maps whose sizes are not that layout's.
fn read_layout(version: u32, pins: &Pins) -> Result<Snapshot, LoaderError> {
    match version {
        1 => read_v1(pins),
        found => Err(LoaderError::UnknownLayout {
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
    let mismatch = |name: &str, err: MapError| LoaderError::LayoutMismatch {
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
                .map_err(|err| bpf_err("cannot read the old CONFIG", err))?,
        ),
        ..Snapshot::default()
    };
    for entry in policies.iter() {
        let (id, policy) = entry.map_err(|err| bpf_err("cannot read the old policies", err))?;
        snapshot.policies.push((id, from_v1::policy(policy)));
        // A policy without counters is possible only in the instant attach or detach makes.
        if let Ok(per_cpu) = counters.get(&id, 0) {
            let per_cpu = per_cpu.iter().copied().map(from_v1::counters).collect();
            snapshot.counters.push((id, per_cpu));
        }
    }
    Ok(snapshot)
}

/// Layout v1 to this build's layout. Field by field, so a layout change makes the compiler point
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
fn write_snapshot(pins: &Pins, snapshot: &Snapshot) -> Result<(), LoaderError> {
    let mut maps = open_policy_maps(pins)?;
    for (id, per_cpu) in &snapshot.counters {
        let values = aya::maps::PerCpuValues::try_from(per_cpu.clone())
            .map_err(|err| bpf_err("the old counters do not fit this machine's CPUs", err))?;
        maps.counters
            .insert(*id, values, 0)
            .map_err(|err| bpf_err("cannot copy the counters", err))?;
    }
    for (id, policy) in &snapshot.policies {
        maps.policies
            .insert(*id, *policy, 0)
            .map_err(|err| bpf_err("cannot copy the policies", err))?;
    }
    let mut config: Array<MapData, Config> = Array::try_from(open_typed(pins, MAP_CONFIG)?)
        .map_err(|err| layout_err(MAP_CONFIG, err))?;
    config
        .set(0, snapshot.config, 0)
        .map_err(|err| bpf_err("cannot copy CONFIG", err))?;
    let placed: Vec<(u64, u32)> = snapshot
        .policies
        .iter()
        .map(|(id, policy)| (*id, policy.level))
        .collect();
    let updates = crate::policy::index_updates(&maps.current_index()?, &placed)
        .map_err(|err| io_err("cannot index the old policies", io::Error::other(err)))?;
    maps.write_index(&updates)
}

/// Migrates the pins of the older layout `from` into this build's layout, with no moment without
/// enforcement: this build is loaded into its own directory on new maps and verified, the
/// policies, counters and switches are copied over, the new programs are attached (both sets
/// run for that moment, each on its own maps holding the same policies), and only then are the
/// old pins removed, which lets the old programs go. Counters carry what the old programs had
/// counted when they were copied; decisions the old programs make between the copy and their
/// release (milliseconds) are counted in the old maps only. Events still in the old ring buffer
/// are not carried over. A failure before the old pins are removed leaves them enforcing and
/// removes this build's new pins.
fn migrate(pins: &Pins, from: u32) -> Result<(), LoaderError> {
    let old = Pins::of(from);
    eprintln!(
        "enforcer: found the pins of map layout v{from} under {}; this build uses layout v{}: migrating them to {}",
        old.dir.display(),
        layout(),
        pins.dir.display()
    );
    // Refuses an unknown or mismatched old layout before anything changes.
    read_layout(from, &old)?;
    // Left by an interrupted migration (the old pins were still in force): start over.
    if pins.dir.exists() {
        fs::remove_dir_all(&pins.dir)
            .map_err(|err| io_err(format!("cannot remove {}", pins.dir.display()), err))?;
    }
    pins.create_dirs()?;
    let result = (|| {
        let btf = Btf::from_sys_fs().map_err(|err| LoaderError::NoBtf(err.to_string()))?;
        let mut ebpf = load_object(pins, &btf)?;
        verify_programs(&mut ebpf, &btf)?;
        // Read now, just before the new programs attach, so the copy is as fresh as it can be.
        let snapshot = read_layout(from, &old)?;
        write_snapshot(pins, &snapshot)?;
        eprintln!(
            "enforcer: loaded this build's programs on new maps under {} and copied {} policies with their counters from v{from}",
            pins.dir.display(),
            snapshot.policies.len()
        );
        for spec in HOOKS {
            attach_pinned(&mut ebpf, pins, spec)?;
        }
        write_build(pins, our_build())
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
        io_err(
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
        layout()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The syscall layer (#6).

/// Syscall-layer mode: makes sure this layout's maps are pinned without loading any LSM program,
/// for hosts that refuse BPF LSM. LSM programs pinned already are left as they are. The caller
/// holds the [`StateLock`].
pub fn install_maps(lock: &StateLock) -> Result<PolicyMaps, LoaderError> {
    require_root()?;
    refuse_newer_layouts()?;
    let pins = Pins::new();
    if pins.complete() {
        // LSM programs are pinned: the full install keeps them current.
        return install(lock);
    }
    if !pins.maps_present() {
        if let Some(found) = pinned_layouts().into_iter().rfind(|v| *v < layout()) {
            return Err(LoaderError::OlderLayout {
                dir: Pins::of(found).dir.display().to_string(),
                found,
                ours: layout(),
            });
        }
        ensure_bpffs()?;
        let fresh = !pins.dir.exists();
        pins.create_dirs()?;
        // Loading the object creates the maps and pins them; no program goes into the kernel.
        let loaded = Btf::from_sys_fs()
            .map_err(|err| LoaderError::NoBtf(err.to_string()))
            .and_then(|btf| load_object(&pins, &btf));
        if let Err(err) = loaded {
            if fresh {
                let _ = fs::remove_dir_all(&pins.dir);
            }
            return Err(err);
        }
    }
    let maps = open_policy_maps(&pins)?;
    sync_syscall_layer(&maps)?;
    Ok(maps)
}

/// True when some policy in `maps` wants the syscall layer.
pub fn syscall_layer_wanted(maps: &PolicyMaps) -> Result<bool, LoaderError> {
    Ok(maps
        .policies()?
        .iter()
        .any(|(_, policy)| policy.flags & policy_flags::SYSCALL_LAYER != 0))
}

/// Attaches the syscall layer's programs while some policy wants them and unpins their links when
/// none does, so that without such a policy no system call pays for a `sys_enter` program. The
/// caller holds the [`StateLock`]; called after every policy change.
pub fn sync_syscall_layer(maps: &PolicyMaps) -> Result<(), LoaderError> {
    let pins = Pins::new();
    let wanted = syscall_layer_wanted(maps)?;
    if wanted {
        let missing: Vec<&HookSpec> = SYSCALL_HOOKS
            .iter()
            .filter(|spec| !pins.link(spec.program).exists())
            .collect();
        if !missing.is_empty() {
            let btf = Btf::from_sys_fs().map_err(|err| LoaderError::NoBtf(err.to_string()))?;
            let mut ebpf = load_object(&pins, &btf)?;
            for spec in &missing {
                verify_program(&mut ebpf, &btf, spec)?;
            }
            // Exit before entry: an entry record must always find its exit program.
            for spec in missing.into_iter().rev() {
                attach_pinned(&mut ebpf, &pins, spec)?;
            }
        }
    } else {
        // Entry first, for the same reason.
        for spec in SYSCALL_HOOKS {
            let link = pins.link(spec.program);
            if fs::symlink_metadata(&link).is_ok() {
                fs::remove_file(&link)
                    .map_err(|err| io_err(format!("cannot remove {}", link.display()), err))?;
            }
        }
    }
    // Every load and unload above changes which kernel objects are the enforcer's.
    crate::protect::sync(&pins.dir)
}

/// Whether this kernel runs the syscall layer: loads and attaches its programs on throwaway maps
/// and lets them go at once (for `enforcer check`).
pub fn probe_syscall_layer() -> Result<(), LoaderError> {
    require_root()?;
    let btf = Btf::from_sys_fs().map_err(|err| LoaderError::NoBtf(err.to_string()))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("LAYOUT", kernel_layout()?, true)
        .load(object())
        .map_err(|err| bpf_err("cannot load the BPF object", err))?;
    for spec in SYSCALL_HOOKS {
        verify_program(&mut ebpf, &btf, spec)?;
        drop(attach(&mut ebpf, spec)?);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Benches, policies, switches, reset.

/// The do-nothing programs on the syscall layer's tracepoints, for benches.
const EMPTY_SYSCALL: [HookSpec; 2] = [
    HookSpec {
        hook: Hook::SysEnter,
        program: "empty_sys_enter",
        attach: Attach::RawTracepoint("sys_enter"),
    },
    HookSpec {
        hook: Hook::SysExit,
        program: "empty_sys_exit",
        attach: Attach::RawTracepoint("sys_exit"),
    },
];

/// Attaches the do-nothing program `empty_<hook>` and pins its link under
/// `/sys/fs/bpf/enforcer-bench/<hook>` (remove the file to detach). For benches only.
pub fn attach_empty(hook: &str) -> Result<PathBuf, LoaderError> {
    require_root()?;
    ensure_bpffs()?;
    let btf = Btf::from_sys_fs().map_err(|err| LoaderError::NoBtf(err.to_string()))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(object())
        .map_err(|err| bpf_err("cannot load the BPF object", err))?;
    let dir = Path::new(BPF_FS).join("enforcer-bench");
    if let Some(spec) = EMPTY_SYSCALL
        .iter()
        .find(|spec| spec.attach.point() == hook)
    {
        // The syscall layer's tracepoints (#6): what the kernel's tracing path costs alone.
        verify_program(&mut ebpf, &btf, spec)?;
        let link = attach(&mut ebpf, spec)?;
        fs::create_dir_all(&dir)
            .map_err(|err| io_err(format!("cannot create {}", dir.display()), err))?;
        let path = dir.join(hook);
        link.pin(&path)
            .map_err(|err| bpf_err(format!("cannot pin {}", path.display()), err))?;
        return Ok(path);
    }
    let name = format!("empty_{hook}");
    let program: &mut Lsm = ebpf
        .program_mut(&name)
        .ok_or(LoaderError::BrokenObject("program", "empty_<hook>"))?
        .try_into()
        .map_err(|err| bpf_err(format!("{name} is not an LSM program"), err))?;
    program
        .load(hook, &btf)
        .map_err(|err| bpf_err(format!("cannot load {name}"), err))?;
    let link_id = program
        .attach()
        .map_err(|err| bpf_err(format!("cannot attach {name}"), err))?;
    let link = program
        .take_link(link_id)
        .map_err(|err| bpf_err(format!("cannot take link of {name}"), err))?;
    fs::create_dir_all(&dir)
        .map_err(|err| io_err(format!("cannot create {}", dir.display()), err))?;
    let path = dir.join(hook);
    FdLink::from(link)
        .pin(&path)
        .map_err(|err| bpf_err(format!("cannot pin {}", path.display()), err))?;
    Ok(path)
}

impl PolicyMaps {
    /// Every policy with its cgroup id.
    pub fn policies(&self) -> Result<Vec<(u64, Policy)>, LoaderError> {
        self.policies
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|err| bpf_err("cannot read the policy map", err))
    }

    /// Rewrites the depth index to cover exactly the policies now in the map (see
    /// [`crate::policy::index_updates`] for the order of writes).
    pub fn write_index(&mut self, updates: &[PolicyIndex]) -> Result<(), LoaderError> {
        for update in updates {
            self.index
                .set(0, update, 0)
                .map_err(|err| bpf_err("cannot update the policy index", err))?;
        }
        Ok(())
    }

    pub fn current_index(&self) -> Result<PolicyIndex, LoaderError> {
        self.index
            .get(&0, 0)
            .map_err(|err| bpf_err("cannot read the policy index", err))
    }
}

/// Sets and clears run-time switches ([`enforcer_common::config`] bits); returns the new flags.
pub fn update_config(_lock: &StateLock, set: u32, clear: u32) -> Result<u32, LoaderError> {
    require_root()?;
    let pins = Pins::new();
    if !pins.maps_present() {
        return Err(not_installed(&pins));
    }
    let mut config: Array<MapData, Config> = Array::try_from(open_typed(&pins, MAP_CONFIG)?)
        .map_err(|err| layout_err(MAP_CONFIG, err))?;
    let mut value = config
        .get(&0, 0)
        .map_err(|err| bpf_err("cannot read CONFIG", err))?;
    value.flags = (value.flags | set) & !clear;
    config
        .set(0, value, 0)
        .map_err(|err| bpf_err("cannot write CONFIG", err))?;
    Ok(value.flags)
}

/// Removes every pin of every layout: programs detach, maps are freed once unreferenced.
pub fn reset(_lock: &StateLock) -> Result<bool, LoaderError> {
    require_root()?;
    let Ok(entries) = fs::read_dir(PIN_BASE) else {
        return Ok(false);
    };
    let mut removed = false;
    for entry in entries.flatten() {
        if layout_of_dir(&entry.file_name().to_string_lossy()).is_none() {
            continue;
        }
        let dir = entry.path();
        fs::remove_dir_all(&dir)
            .map_err(|err| io_err(format!("cannot remove {}", dir.display()), err))?;
        removed = true;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_tell_objects_apart() {
        let object: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let id = build_id(&object);
        assert_eq!(id, build_id(&object.clone()), "deterministic");
        let mut changed = object.clone();
        changed[997] ^= 1;
        assert_ne!(build_id(&changed), id, "a byte in the padded tail");
        changed = object.clone();
        changed[8] ^= 0x80;
        assert_ne!(build_id(&changed), id);
        // Zero padding does not make a shorter object equal to a longer one.
        let mut longer = object.clone();
        longer.push(0);
        assert_ne!(build_id(&longer), id);
        assert_ne!(build_id(&[]), 0);
    }

    #[test]
    fn layout_directories() {
        assert_eq!(layout_of_dir("v1"), Some(1));
        assert_eq!(layout_of_dir("v12"), Some(12));
        for name in ["v", "x1", "v1a", "v-1", "maps", "v+2"] {
            assert_eq!(layout_of_dir(name), None, "{name}");
        }
    }

    #[test]
    fn v1_reads_into_this_layout_unchanged() {
        // While ABI_VERSION is 1, the frozen v1 types are the current ones, byte for byte (a
        // layout change replaces this test with one of the conversion it needs).
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
