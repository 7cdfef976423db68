//! Verifying a program, attaching it, and pinning its link over the one pinned before without a
//! moment with neither (make-before-break).
use std::{fs, path::Path};

use aya::{
    Btf, Ebpf,
    programs::{
        FEntry, Lsm, Program, ProgramError, RawTracePoint, links::FdLink, links::PinnedLink,
    },
};
use enforcer_common::{Attach, HOOKS, HookSpec};

use super::{LoaderError, pins::Pins};

/// Loads every hook's program into the kernel (the verifier runs here). Nothing is attached yet,
/// so a refusal changes nothing.
pub(super) fn verify_programs(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), LoaderError> {
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
    LoaderError::bpf(
        format!(
            "program {} is not of the kind its table row says ({:?})",
            spec.program, spec.attach
        ),
        err,
    )
}

pub(super) fn verify_program(
    ebpf: &mut Ebpf,
    btf: &Btf,
    spec: &HookSpec,
) -> Result<(), LoaderError> {
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

pub(super) fn attach(ebpf: &mut Ebpf, spec: &HookSpec) -> Result<FdLink, LoaderError> {
    let program = program(ebpf, spec)?;
    let attach_err = |err| LoaderError::bpf(format!("cannot attach {}", spec.program), err);
    let link_err = |err| LoaderError::bpf(format!("cannot take link of {}", spec.program), err);
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
pub(super) fn attach_pinned(
    ebpf: &mut Ebpf,
    pins: &Pins,
    spec: &HookSpec,
) -> Result<Swap, LoaderError> {
    let link = attach(ebpf, spec)?;
    swap_link(
        link,
        &pins.staged_link(spec.program),
        &pins.link(spec.program),
    )
}

/// How a link got to its pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Swap {
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
    let pin_err =
        |path: &Path, err| LoaderError::bpf(format!("cannot pin {}", path.display()), err);
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
        .map_err(|err| LoaderError::io(format!("cannot remove {}", current.display()), err))?;
    FdLink::from(pinned)
        .pin(current)
        .map_err(|err| pin_err(current, err))?;
    let _ = fs::remove_file(staged);
    Ok(Swap::Replaced)
}

/// Finishes what an interrupted replacement left in `next/`: a staged link whose final pin
/// exists is dropped (the final pin enforces), one whose final pin is missing takes its place.
pub(super) fn recover_staged_links(pins: &Pins) -> Result<(), LoaderError> {
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
            .map_err(|err| LoaderError::bpf(format!("cannot open {}", staged.display()), err))?;
        swap_link(FdLink::from(link), &staged, &current)?;
        let _ = fs::remove_file(&staged);
    }
    Ok(())
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
