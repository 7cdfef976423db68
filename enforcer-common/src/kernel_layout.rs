//! Kernel struct field offsets, found by user space in the running kernel's BTF and handed to the
//! programs in their read-only data, and the one kernel flag bit the programs test.

/// Byte offsets of the kernel struct fields the programs read, found by user space in the running
/// kernel's BTF (`/sys/kernel/btf/vmlinux`) and written into the programs' read-only data before
/// they load. Rust BPF programs get no CO-RE relocations from aya 0.14, so this is how they read
/// fields whose offsets differ between kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// `task_struct.pid` (`pid_t`: the thread id).
    pub task_pid: u32,
    /// `task_struct.tgid` (`pid_t`).
    pub task_tgid: u32,
    /// `task_struct.start_time` (`u64`, monotonic ns).
    pub task_start_time: u32,
    /// `task_struct.real_parent` (`struct task_struct *`).
    pub task_real_parent: u32,
    /// `task_struct.cred` (`const struct cred *`).
    pub task_cred: u32,
    /// `task_struct.comm` (`char[16]`).
    pub task_comm: u32,
    /// `task_struct.seccomp.mode` (`int`).
    pub task_seccomp_mode: u32,
    /// `cred.uid` (`kuid_t`, a `u32`).
    pub cred_uid: u32,
    /// `cred.gid` (`kgid_t`, a `u32`).
    pub cred_gid: u32,
    /// `cred.cap_effective` (`kernel_cap_t`: 8 bytes, capability n is bit n, on every kernel).
    pub cred_cap_effective: u32,
    /// `task_struct.group_leader` (`struct task_struct *`).
    pub task_group_leader: u32,
    /// `task_struct.cgroups` (`struct css_set *`).
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp` (`struct cgroup *`: the task's cgroup v2 cgroup).
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn` (`struct kernfs_node *`: the cgroup's directory).
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (`u64`: the cgroup id, the directory's inode number).
    pub kernfs_node_id: u32,
    /// `kernfs_node.parent` (`struct kernfs_node *`: the parent cgroup's directory).
    pub kernfs_node_parent: u32,
    /// `linux_binprm.file` (`struct file *`: the executable being run).
    pub binprm_file: u32,
    /// `file.f_path.dentry` (`struct dentry *`).
    pub file_dentry: u32,
    /// `dentry.d_name.name` (`const unsigned char *`).
    pub dentry_name: u32,
    /// `task_struct.mm` (`struct mm_struct *`).
    pub task_mm: u32,
    /// `mm_struct.exe_file` (`struct file *`: the executable the process runs).
    pub mm_exe_file: u32,
    /// `file.f_inode` (`struct inode *`).
    pub file_inode: u32,
    /// `task_struct.thread_info.status` (`u32`; bit [`TS_COMPAT`] during a 32-bit system call).
    pub task_ti_status: u32,
    /// `task_struct.fs` (`struct fs_struct *`).
    pub task_fs: u32,
    /// `fs_struct.root.mnt` (`struct vfsmount *`) and `fs_struct.root.dentry`.
    pub fs_root_mnt: u32,
    pub fs_root_dentry: u32,
    /// `task_struct.nsproxy` (`struct nsproxy *`) and `nsproxy.mnt_ns`.
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    /// `file.f_path.mnt` (`struct vfsmount *`), embedded at `mount.mnt` in `struct mount`,
    /// whose `mnt_ns` is `MNT_NS_INTERNAL` for the kernel's internal mounts (memfd's shmem).
    pub file_mnt: u32,
    pub mount_mnt: u32,
    pub mount_mnt_ns: u32,
    /// `inode.i_sb`, `super_block.s_magic` (`unsigned long`), `super_block.s_dev` (`dev_t`).
    pub inode_sb: u32,
    pub sb_magic: u32,
    pub sb_dev: u32,
    /// `dentry.d_flags` (`unsigned int`) and `dentry.d_sb`.
    pub dentry_flags: u32,
    pub dentry_sb: u32,
    /// `cgroup.level` (`int`) and `cgroup.ancestors` (`struct cgroup *[]`, root first).
    pub cgroup_level: u32,
    pub cgroup_ancestors: u32,
    /// `bpf_map.id`, `bpf_prog.aux`, `bpf_prog_aux.id`, `bpf_link.id` (`u32` ids).
    pub bpf_map_id: u32,
    pub bpf_prog_aux: u32,
    pub bpf_prog_aux_id: u32,
    pub bpf_link_id: u32,
    /// `task_struct.files`, `files_struct.fdt`, `fdtable.max_fds`, `fdtable.fd`,
    /// `file.private_data`: from a descriptor number to the object behind it.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    /// The value of `DCACHE_MOUNTED` (bit 16 up to 6.14, an enum of bit 15 since).
    pub dcache_mounted: u32,
    /// How many arguments the `bpf` LSM hook has (3 up to 6.15, 4 since): the previous LSM's
    /// verdict comes after them.
    pub lsm_bpf_args: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<KernelLayout>() == 200);

/// x86 `thread_info.status` bit set from the entry of a 32-bit (ia32) system call until the
/// return to user space, whatever instruction made it (`int $0x80` from a 64-bit process too).
pub const TS_COMPAT: u32 = 0x0002;
