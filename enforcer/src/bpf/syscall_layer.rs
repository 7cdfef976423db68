//! The syscall layer's programs (`sys_enter`/`sys_exit`), attached only while some policy wants
//! them, and the maps-only install for hosts that refuse BPF LSM.
use std::fs;

use enforcer_common::{HookSpec, SYSCALL_HOOKS, policy_flags};

use super::{
    Bpf, LoaderError, PolicyMaps, StateLock,
    attach::{attach, attach_pinned, verify_program},
    error::kernel_btf,
    install::install_programs,
    kernel::{ensure_bpffs, require_root},
    maps::open_policy_maps,
    object::{load_object, load_unpinned},
    pins::{older_abi, older_abi_error, refuse_newer_abis},
    protect,
};

/// Syscall-layer mode: makes sure this ABI's maps are pinned without loading any LSM program,
/// for hosts that refuse BPF LSM. LSM programs pinned already are left as they are. The caller
/// holds the [`StateLock`].
pub fn install_maps_only(lock: &StateLock) -> Result<PolicyMaps, LoaderError> {
    let bpf = lock.bpf();
    require_root()?;
    refuse_newer_abis(bpf.abi())?;
    let pins = bpf.pins();
    if pins.complete() {
        // LSM programs are pinned: the full install keeps them current.
        return install_programs(lock);
    }
    if !pins.maps_present() {
        if let Some(found) = older_abi(bpf.abi()) {
            return Err(older_abi_error(found, bpf.abi()));
        }
        ensure_bpffs()?;
        let fresh = !pins.dir.exists();
        pins.create_dirs()?;
        // Loading the object creates the maps and pins them; no program goes into the kernel.
        let loaded = kernel_btf().and_then(|btf| load_object(bpf, &pins, &btf));
        if let Err(err) = loaded {
            if fresh {
                let _ = fs::remove_dir_all(&pins.dir);
            }
            return Err(err);
        }
    }
    let maps = open_policy_maps(bpf, &pins)?;
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
    let bpf = &maps.bpf;
    let pins = bpf.pins();
    let wanted = syscall_layer_wanted(maps)?;
    if wanted {
        let missing: Vec<&HookSpec> = SYSCALL_HOOKS
            .iter()
            .filter(|spec| !pins.link(spec.program).exists())
            .collect();
        if !missing.is_empty() {
            let btf = kernel_btf()?;
            let mut ebpf = load_object(bpf, &pins, &btf)?;
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
                fs::remove_file(&link).map_err(|err| {
                    LoaderError::io(format!("cannot remove {}", link.display()), err)
                })?;
            }
        }
    }
    // Every load and unload above changes which kernel objects are the enforcer's.
    protect::sync(&pins.dir)
}

impl Bpf {
    /// Whether this kernel runs the syscall layer: loads and attaches its programs on throwaway
    /// maps and lets them go at once (for `enforcer check`).
    pub fn probe_syscall_layer(&self) -> Result<(), LoaderError> {
        require_root()?;
        let btf = kernel_btf()?;
        let mut ebpf = load_unpinned(self, &btf)?;
        for spec in SYSCALL_HOOKS {
            verify_program(&mut ebpf, &btf, spec)?;
            drop(attach(&mut ebpf, spec)?);
        }
        Ok(())
    }
}
