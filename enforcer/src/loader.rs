//! Loads, attaches and pins the BPF programs, and opens the pinned maps.
//!
//! Everything lives under a versioned bpffs directory, so enforcement outlives every `enforcer`
//! process and a build with another map layout ([`enforcer_common::ABI_VERSION`]) never reuses an
//! old map. Links are pinned last: a complete set of link pins means the maps are pinned too.
use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use aya::{
    Btf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{Lsm, ProgramError, links::FdLink},
};
use enforcer_common::{ABI_VERSION, Counters, HOOKS, Policy, PolicyIndex};
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
const MAPS: [&str; 6] = [
    MAP_POLICIES,
    MAP_INDEX,
    MAP_COUNTERS,
    MAP_EVENTS,
    MAP_DROPPED,
    MAP_CONFIG,
];

#[derive(Debug, Error)]
pub enum LoaderError {
    #[error("this needs root (CAP_SYS_ADMIN and CAP_BPF); run it as root")]
    NotPrivileged,
    #[error(
        "BPF LSM is not active on this kernel (active LSMs: {0}); add bpf to the boot parameter: lsm={0},bpf"
    )]
    LsmInactive(String),
    #[error(
        "this kernel refused to load the BPF LSM program '{0}' (EPERM before verification): BPF LSM programs cannot run here; boot a kernel with CONFIG_BPF_LSM=y and bpf in lsm="
    )]
    LsmRefused(&'static str),
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
        "kernel BTF is unavailable at /sys/kernel/btf/vmlinux ({0}); a kernel with CONFIG_DEBUG_INFO_BTF=y is needed"
    )]
    NoBtf(String),
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

/// Paths of this build's pins.
pub struct Pins {
    dir: PathBuf,
}

impl Pins {
    pub fn new() -> Self {
        Self {
            dir: Path::new(PIN_BASE).join(format!("v{ABI_VERSION}")),
        }
    }

    fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    fn link(&self, program: &str) -> PathBuf {
        self.dir.join("links").join(program)
    }

    fn complete(&self) -> bool {
        HOOKS.iter().all(|spec| self.link(spec.program).exists())
            && MAPS.iter().all(|name| self.map(name).exists())
    }
}

/// The maps user space changes or reads to manage policies.
pub struct PolicyMaps {
    pub policies: HashMap<MapData, u64, Policy>,
    pub index: Array<MapData, PolicyIndex>,
    pub counters: PerCpuHashMap<MapData, u64, Counters>,
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

/// Opens the pinned policy maps, loading and attaching the programs first if they are not there.
/// The caller holds the [`StateLock`].
pub fn install(_lock: &StateLock) -> Result<PolicyMaps, LoaderError> {
    require_root()?;
    let pins = Pins::new();
    if !pins.complete() {
        ensure_bpffs()?;
        check_lsm_active()?;
        load_and_pin(&pins)?;
    }
    open_policy_maps(&pins)
}

/// Opens the pinned policy maps; fails if nothing was ever attached.
pub fn open_policy_maps_existing() -> Result<PolicyMaps, LoaderError> {
    require_root()?;
    let pins = Pins::new();
    if !pins.complete() {
        return Err(LoaderError::NotInstalled(pins.dir.display().to_string()));
    }
    open_policy_maps(&pins)
}

pub fn open_event_maps() -> Result<EventMaps, LoaderError> {
    require_root()?;
    let pins = Pins::new();
    if !pins.complete() {
        return Err(LoaderError::NotInstalled(pins.dir.display().to_string()));
    }
    Ok(EventMaps {
        events: RingBuf::try_from(Map::RingBuf(open_map(&pins, MAP_EVENTS)?))
            .map_err(|err| bpf_err("EVENTS is not a ring buffer", err))?,
        dropped: PerCpuArray::try_from(Map::PerCpuArray(open_map(&pins, MAP_DROPPED)?))
            .map_err(|err| bpf_err("DROPPED has an unexpected layout", err))?,
    })
}

fn open_map(pins: &Pins, name: &str) -> Result<MapData, LoaderError> {
    let path = pins.map(name);
    MapData::from_pin(&path).map_err(|err| bpf_err(format!("cannot open {}", path.display()), err))
}

fn open_policy_maps(pins: &Pins) -> Result<PolicyMaps, LoaderError> {
    let layout =
        |name: &str, err: MapError| bpf_err(format!("{name} has an unexpected layout"), err);
    Ok(PolicyMaps {
        policies: HashMap::try_from(Map::HashMap(open_map(pins, MAP_POLICIES)?))
            .map_err(|err| layout(MAP_POLICIES, err))?,
        index: Array::try_from(Map::Array(open_map(pins, MAP_INDEX)?))
            .map_err(|err| layout(MAP_INDEX, err))?,
        counters: PerCpuHashMap::try_from(Map::PerCpuHashMap(open_map(pins, MAP_COUNTERS)?))
            .map_err(|err| layout(MAP_COUNTERS, err))?,
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

/// True when this build's programs are loaded and pinned (every link and map pin is there).
pub fn installed() -> bool {
    Pins::new().complete()
}

/// How many of this build's programs have their link pinned (attached).
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

fn load_and_pin(pins: &Pins) -> Result<(), LoaderError> {
    let btf = Btf::from_sys_fs().map_err(|err| LoaderError::NoBtf(err.to_string()))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(BPF_OBJECT)
        .map_err(|err| bpf_err("cannot load the BPF object", err))?;
    for spec in HOOKS {
        let program: &mut Lsm = ebpf
            .program_mut(spec.program)
            .ok_or(LoaderError::BrokenObject("program", spec.program))?
            .try_into()
            .map_err(|err| {
                bpf_err(
                    format!("program {} is not an LSM program", spec.program),
                    err,
                )
            })?;
        program
            .load(spec.lsm_hook, &btf)
            .map_err(|err| classify_load_error(spec.program, spec.lsm_hook, err))?;
    }

    // From here on we create pins; remove what we made if any later step fails, so a failed
    // first attach leaves nothing half-installed behind.
    let result = (|| {
        for dir in [pins.dir.join("maps"), pins.dir.join("links")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|err| io_err(format!("cannot create {}", dir.display()), err))?;
        }
        let _ = fs::set_permissions(PIN_BASE, fs::Permissions::from_mode(0o700));
        for name in MAPS {
            let map = ebpf
                .map(name)
                .ok_or(LoaderError::BrokenObject("map", name))?;
            let path = pins.map(name);
            if !path.exists() {
                map.pin(&path)
                    .map_err(|err| bpf_err(format!("cannot pin {}", path.display()), err))?;
            }
        }
        for spec in HOOKS {
            let path = pins.link(spec.program);
            if path.exists() {
                continue;
            }
            let program: &mut Lsm = ebpf
                .program_mut(spec.program)
                .ok_or(LoaderError::BrokenObject("program", spec.program))?
                .try_into()
                .map_err(|err| bpf_err("program type changed", err))?;
            let link_id = program
                .attach()
                .map_err(|err| bpf_err(format!("cannot attach {}", spec.program), err))?;
            let link = program
                .take_link(link_id)
                .map_err(|err| bpf_err(format!("cannot take link of {}", spec.program), err))?;
            FdLink::from(link)
                .pin(&path)
                .map_err(|err| bpf_err(format!("cannot pin {}", path.display()), err))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&pins.dir);
    }
    result
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
            LoaderError::LsmRefused(program)
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

/// Attaches the do-nothing program `empty_<hook>` and pins its link under
/// `/sys/fs/bpf/enforcer-bench/<hook>` (remove the file to detach). For benches only.
pub fn attach_empty(hook: &str) -> Result<PathBuf, LoaderError> {
    require_root()?;
    ensure_bpffs()?;
    let btf = Btf::from_sys_fs().map_err(|err| LoaderError::NoBtf(err.to_string()))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(BPF_OBJECT)
        .map_err(|err| bpf_err("cannot load the BPF object", err))?;
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
    let dir = Path::new(BPF_FS).join("enforcer-bench");
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
    if !pins.complete() {
        return Err(LoaderError::NotInstalled(pins.dir.display().to_string()));
    }
    let mut config: Array<MapData, enforcer_common::Config> =
        Array::try_from(Map::Array(open_map(&pins, MAP_CONFIG)?))
            .map_err(|err| bpf_err("CONFIG has an unexpected layout", err))?;
    let mut value = config
        .get(&0, 0)
        .map_err(|err| bpf_err("cannot read CONFIG", err))?;
    value.flags = (value.flags | set) & !clear;
    config
        .set(0, value, 0)
        .map_err(|err| bpf_err("cannot write CONFIG", err))?;
    Ok(value.flags)
}

/// Removes every pin of this build: programs detach, maps are freed once unreferenced.
pub fn reset(_lock: &StateLock) -> Result<bool, LoaderError> {
    require_root()?;
    let pins = Pins::new();
    if !pins.dir.exists() {
        return Ok(false);
    }
    fs::remove_dir_all(&pins.dir)
        .map_err(|err| io_err(format!("cannot remove {}", pins.dir.display()), err))?;
    Ok(true)
}
