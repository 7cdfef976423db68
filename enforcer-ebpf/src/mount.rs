//! `mount`: every way to change the mount table. mount(2) (new, bind, remount, move, propagation),
//! umount2, pivot_root and move_mount each reach a dedicated hook; open_tree, fsopen, fsconfig,
//! fsmount, fspick and mount_setattr reach none, but each checks CAP_SYS_ADMIN first, which the
//! `capable` program guards for those call numbers. Denying fsopen/fsmount/open_tree also stops
//! a detached mount from ever existing, so it cannot be used through its fd either.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::{Hook, Operation, caps::CAP_SYS_ADMIN, syscalls::is_mount_api_without_hook};

use crate::{decide::Verdict, enforce::enforce};

#[inline(always)]
pub fn on_cap_sys_admin(ctx: &LsmContext) -> Verdict {
    enforce(
        ctx,
        Operation::Mount,
        Hook::Capable,
        CAP_SYS_ADMIN as i64,
        |syscall| is_mount_api_without_hook(syscall.nr),
    )
}

/// `flags_arg`: which hook argument holds the mount or unmount flags, reported in the event.
#[inline(always)]
fn guard(ctx: &LsmContext, hook: Hook, previous_arg: usize, flags_arg: Option<usize>) -> i32 {
    let previous: i32 = ctx.arg(previous_arg);
    if previous != 0 {
        return previous;
    }
    let flags: u64 = flags_arg.map_or(0, |i| ctx.arg(i));
    enforce(ctx, Operation::Mount, hook, flags as i64, |_| true).retval()
}

/// `sb_mount(dev_name, path, type, flags, data)`: every mount(2).
#[lsm(hook = "sb_mount")]
pub fn sb_mount(ctx: LsmContext) -> i32 {
    guard(&ctx, Hook::SbMount, 5, Some(3))
}

/// `sb_umount(mnt, flags)`: umount2.
#[lsm(hook = "sb_umount")]
pub fn sb_umount(ctx: LsmContext) -> i32 {
    guard(&ctx, Hook::SbUmount, 2, Some(1))
}

/// `sb_pivotroot(old_path, new_path)`: pivot_root.
#[lsm(hook = "sb_pivotroot")]
pub fn sb_pivotroot(ctx: LsmContext) -> i32 {
    guard(&ctx, Hook::SbPivotroot, 2, None)
}

/// `move_mount(from_path, to_path)`: attaching a detached or cloned mount, moving a mount.
#[lsm(hook = "move_mount")]
pub fn move_mount(ctx: LsmContext) -> i32 {
    guard(&ctx, Hook::MoveMount, 2, None)
}

/// Removing `dentry` (rmdir, unlink, or either side of a rename): refused for a covered caller on
/// the enforcer's own pins (tamper protection), and judged as `mount` when `dentry` is a mount
/// point. The kernel refuses to remove a mount point of the caller's own namespace (EBUSY) before
/// this hook; one in another namespace passes and the kernel detaches that mount lazily, with no
/// mount hook, so here is where that unmount is seen.
#[inline(always)]
fn on_remove(ctx: &LsmContext, hook: Hook, dentries: [*const u8; 2]) -> i32 {
    if crate::arming::no_policies() {
        return 0;
    }
    let l = crate::layout::get();
    let mut mount_point = false;
    for dentry in dentries {
        if dentry.is_null() {
            continue;
        }
        if crate::tamper::on_protected_fs(dentry)
            && let Some((id, policy)) = crate::decide::nearest_policy()
        {
            return crate::tamper::refuse(id, policy.flags, hook, 0);
        }
        // SAFETY: reads the dentry's flags; a fault yields None.
        let flags: Option<u32> = unsafe { crate::layout::read_kernel(dentry, l.dentry_flags) };
        mount_point |= flags.is_some_and(|f| f & l.dcache_mounted != 0);
    }
    if !mount_point {
        return 0;
    }
    enforce(ctx, Operation::Mount, hook, 0, |_| true).retval()
}

/// `inode_rmdir(dir, dentry)`.
#[lsm(hook = "inode_rmdir")]
pub fn inode_rmdir(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    on_remove(&ctx, Hook::InodeRmdir, [ctx.arg(1), core::ptr::null()])
}

/// `inode_unlink(dir, dentry)`.
#[lsm(hook = "inode_unlink")]
pub fn inode_unlink(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    on_remove(&ctx, Hook::InodeUnlink, [ctx.arg(1), core::ptr::null()])
}

/// `inode_rename(old_dir, old_dentry, new_dir, new_dentry)`: renaming over a mount point
/// detaches it as removing it does.
#[lsm(hook = "inode_rename")]
pub fn inode_rename(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    on_remove(&ctx, Hook::InodeRename, [ctx.arg(1), ctx.arg(3)])
}
