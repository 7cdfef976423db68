//! Benches only (feature `testing`): the do-nothing programs of the bench object attached alone,
//! what the kernel's hook paths cost without enforcer's work.
use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    programs::{Lsm, links::FdLink},
};
use enforcer_common::{Attach, Hook, HookSpec};

use super::{
    Bpf, LoaderError,
    attach::{attach, verify_program},
    error::kernel_btf,
    kernel::{ensure_bpffs, require_root},
};
use crate::paths::BENCH_PINS;

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
/// [`BENCH_PINS`]`/<hook>` (remove the file to detach). For benches only.
pub fn attach_empty(bpf: &Bpf, hook: &str) -> Result<PathBuf, LoaderError> {
    require_root()?;
    ensure_bpffs()?;
    let btf = kernel_btf()?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(bpf.object())
        .map_err(|err| LoaderError::bpf("cannot load the BPF object", err))?;
    let dir = Path::new(BENCH_PINS);
    if let Some(spec) = EMPTY_SYSCALL
        .iter()
        .find(|spec| spec.attach.point() == hook)
    {
        // The syscall layer's tracepoints: what the kernel's tracing path costs alone.
        verify_program(&mut ebpf, &btf, spec)?;
        let link = attach(&mut ebpf, spec)?;
        fs::create_dir_all(dir)
            .map_err(|err| LoaderError::io(format!("cannot create {}", dir.display()), err))?;
        let path = dir.join(hook);
        link.pin(&path)
            .map_err(|err| LoaderError::bpf(format!("cannot pin {}", path.display()), err))?;
        return Ok(path);
    }
    let name = format!("empty_{hook}");
    let program: &mut Lsm = ebpf
        .program_mut(&name)
        .ok_or(LoaderError::BrokenObject("program", "empty_<hook>"))?
        .try_into()
        .map_err(|err| LoaderError::bpf(format!("{name} is not an LSM program"), err))?;
    program
        .load(hook, &btf)
        .map_err(|err| LoaderError::bpf(format!("cannot load {name}"), err))?;
    let link_id = program
        .attach()
        .map_err(|err| LoaderError::bpf(format!("cannot attach {name}"), err))?;
    let link = program
        .take_link(link_id)
        .map_err(|err| LoaderError::bpf(format!("cannot take link of {name}"), err))?;
    fs::create_dir_all(dir)
        .map_err(|err| LoaderError::io(format!("cannot create {}", dir.display()), err))?;
    let path = dir.join(hook);
    FdLink::from(link)
        .pin(&path)
        .map_err(|err| LoaderError::bpf(format!("cannot pin {}", path.display()), err))?;
    Ok(path)
}
