//! Kernel struct field offsets, written by user space into `.rodata` before the programs load
//! (see `enforcer/src/kernel_layout.rs`). The map is frozen read-only, so the verifier treats the
//! offsets as constants.
use aya_ebpf::helpers::bpf_probe_read_kernel;
use enforcer_common::KernelLayout;

#[unsafe(no_mangle)]
static LAYOUT: KernelLayout = KernelLayout {
    task_pid: 0,
    task_tgid: 0,
    task_start_time: 0,
    task_real_parent: 0,
    task_cred: 0,
    task_comm: 0,
    task_seccomp_mode: 0,
    cred_uid: 0,
    cred_gid: 0,
    cred_cap_effective: 0,
    task_group_leader: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    kernfs_node_parent: 0,
    binprm_file: 0,
    file_dentry: 0,
    dentry_name: 0,
    task_mm: 0,
    mm_exe_file: 0,
    file_inode: 0,
    task_ti_status: 0,
    task_fs: 0,
    fs_root_mnt: 0,
    fs_root_dentry: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    file_mnt: 0,
    mount_mnt: 0,
    mount_mnt_ns: 0,
    inode_sb: 0,
    sb_magic: 0,
    sb_dev: 0,
    dentry_flags: 0,
    dentry_sb: 0,
    cgroup_level: 0,
    cgroup_ancestors: 0,
    bpf_map_id: 0,
    bpf_prog_aux: 0,
    bpf_prog_aux_id: 0,
    bpf_link_id: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_private_data: 0,
    dcache_mounted: 0,
    lsm_bpf_args: 0,
    _pad: 0,
};

/// The offsets of the running kernel.
#[inline(always)]
pub fn get() -> KernelLayout {
    // SAFETY: a plain read of a static; volatile so the compiler cannot fold in the zeros above.
    unsafe { core::ptr::read_volatile(&LAYOUT) }
}

/// Reads a `T` at `offset` bytes into the kernel object at `base`; `None` when the read faults.
///
/// # Safety
/// `base` must point at a kernel object whose field at `offset` is a `T`.
#[inline(always)]
pub unsafe fn read_kernel<T>(base: *const u8, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address itself and fails instead of faulting.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }.ok()
}
