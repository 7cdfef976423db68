//! Bringing the kernel to this build's programs (see the `bpf` module documentation): adopt,
//! load, repair, replace in place, or migrate, and open the policy maps afterwards.
use std::fs;

use enforcer_common::{HOOKS, HookSpec, SYSCALL_HOOKS};

use super::{
    LoaderError, PolicyMaps, StateLock,
    attach::{Swap, attach_pinned, recover_staged_links, verify_program, verify_programs},
    error::kernel_btf,
    kernel::{prepare_kernel, require_root},
    map_names,
    maps::{check_pinned_maps, open_policy_maps, write_build},
    migrate::migrate,
    object::{Bpf, build_name, load_object},
    pins::{Pins, older_abi, pinned_abis, refuse_newer_abis},
    sync_syscall_layer,
};

/// Opens the pinned policy maps, bringing the kernel to this build's programs first (loading,
/// replacing or migrating them, see the module documentation). The caller holds the
/// [`StateLock`].
pub fn install_programs(lock: &StateLock) -> Result<PolicyMaps, LoaderError> {
    install_programs_with_outcome(lock).map(|(maps, _)| maps)
}

/// What [`install_programs`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallOutcome {
    /// This build's programs were pinned: adopted as they were.
    Adopted,
    /// Nothing was pinned: loaded, attached and pinned.
    Loaded,
    /// Some of this ABI's pins were missing: the programs were loaded on the pinned maps and
    /// every link pinned anew.
    Repaired,
    /// Another build's programs of this ABI: replaced in place, maps kept.
    Upgraded,
    /// An older ABI's pins: migrated into this ABI's, then removed.
    Migrated { from: u32 },
}

impl InstallOutcome {
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

/// [`install_programs`], also saying what it did. Each step of an upgrade prints one line on
/// stderr. The syscall layer is brought in line with the policies afterwards (a migration does
/// not carry its links over).
pub fn install_programs_with_outcome(
    lock: &StateLock,
) -> Result<(PolicyMaps, InstallOutcome), LoaderError> {
    let (maps, installed) = install_lsm_programs(lock.bpf())?;
    sync_syscall_layer(&maps)?;
    Ok((maps, installed))
}

/// The LSM programs and the maps, without the syscall layer: the caller holds the state lock.
fn install_lsm_programs(bpf: &Bpf) -> Result<(PolicyMaps, InstallOutcome), LoaderError> {
    require_root()?;
    refuse_newer_abis(bpf.abi())?;
    let pins = bpf.pins();
    let ours = bpf.build();
    if pins.complete() {
        finish_migration(bpf.abi())?;
    }
    let installed = if pins.complete() {
        match pins.build() {
            Some(build) if build == ours => InstallOutcome::Adopted,
            previous => {
                eprintln!(
                    "enforcer: the programs pinned under {} are another build's ({}; this is {}): replacing them in place, on the same maps",
                    pins.dir.display(),
                    build_name(previous),
                    build_name(Some(ours)),
                );
                prepare_kernel()?;
                let swapped = replace_programs(bpf, &pins).inspect_err(|err| {
                    if !matches!(err, LoaderError::PartlyReplaced { .. }) {
                        eprintln!(
                            "enforcer: nothing was replaced: the programs of {} stay in force",
                            build_name(previous)
                        );
                    }
                })?;
                let maps = open_policy_maps(bpf, &pins)?;
                eprintln!(
                    "enforcer: upgraded the programs in place: {} links replaced, each new program attached before its old one was let go; maps, {} policies and their counters kept",
                    swapped.replaced + swapped.added,
                    maps.policies()?.len()
                );
                return Ok((maps, InstallOutcome::Upgraded));
            }
        }
    } else if let Some(from) = older_abi(bpf.abi()) {
        prepare_kernel()?;
        migrate(bpf, &pins, from)?;
        InstallOutcome::Migrated { from }
    } else {
        prepare_kernel()?;
        let swapped = replace_programs(bpf, &pins)?;
        if swapped.replaced == 0 && swapped.kept_maps == 0 {
            InstallOutcome::Loaded
        } else {
            eprintln!(
                "enforcer: repaired the incomplete pins under {}: {} links pinned anew, {} pinned maps kept",
                pins.dir.display(),
                swapped.replaced + swapped.added,
                swapped.kept_maps
            );
            InstallOutcome::Repaired
        }
    };
    Ok((open_policy_maps(bpf, &pins)?, installed))
}

/// Removes older ABIs' pins left beside this ABI's complete ones: a migration whose last
/// step failed. Their programs still run on maps nobody updates any more.
fn finish_migration(ours: u32) -> Result<(), LoaderError> {
    for old in pinned_abis().into_iter().filter(|v| *v < ours) {
        let dir = Pins::of(old).dir;
        fs::remove_dir_all(&dir).map_err(|err| {
            LoaderError::io(format!("cannot remove the old pins {}", dir.display()), err)
        })?;
        eprintln!(
            "enforcer: removed the leftover pins of map layout v{old} under {} (a migration to v{} had not finished)",
            dir.display(),
            ours
        );
    }
    Ok(())
}

/// What [`replace_programs`] did.
struct ReplaceReport {
    /// Link pins that held another program's link.
    replaced: usize,
    /// Link pins that were missing.
    added: usize,
    /// Map pins that were there and were reused.
    kept_maps: usize,
}

/// Loads this build's programs on this ABI's pinned maps (creating the missing ones), attaches
/// them and pins their links, replacing any link that is there make-before-break
/// (`swap_link`), then records this build in `BUILD`. Used for a fresh install (nothing pinned),
/// a repair (some pins missing) and an upgrade in place (another build's programs).
///
/// Nothing is attached until every program passed the verifier, so a refusal leaves the kernel
/// as it was (a fresh install removes what it pinned). A failure while links are being replaced
/// leaves some hooks with the new build's programs and the rest with the old one's, all on the
/// same maps; `BUILD` still names the old build, so the next install finishes the job.
fn replace_programs(bpf: &Bpf, pins: &Pins) -> Result<ReplaceReport, LoaderError> {
    let fresh = !pins.dir.exists();
    pins.create_dirs()?;
    let result = (|| {
        recover_staged_links(pins)?;
        check_pinned_maps(pins)?;
        let kept_maps = map_names::MAPS
            .iter()
            .filter(|name| pins.map(name).exists())
            .count();
        let btf = kernel_btf()?;
        let mut ebpf = load_object(bpf, pins, &btf)?;
        verify_programs(&mut ebpf, &btf)?;
        // The syscall layer's links, where pinned, are replaced with the rest.
        let on_demand: Vec<&HookSpec> = SYSCALL_HOOKS
            .iter()
            .filter(|spec| fs::symlink_metadata(pins.link(spec.program)).is_ok())
            .collect();
        for spec in &on_demand {
            verify_program(&mut ebpf, &btf, spec)?;
        }
        let mut done = ReplaceReport {
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
        write_build(pins, bpf.build())?;
        // The older builds' setup map: their programs are gone, and with them its last user.
        let _ = fs::remove_file(pins.map(map_names::MAP_EXEMPT_OLD));
        Ok(done)
    })();
    if result.is_err() && fresh {
        let _ = fs::remove_dir_all(&pins.dir);
    }
    result
}
