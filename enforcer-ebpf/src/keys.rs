//! `keyctl`: kernel keys and keyrings. Creating any key or keyring (add_key, joining or creating a
//! session keyring, request_key's construction) passes `key_alloc`; every use of an existing key
//! (read, update, link, search, setperm, describe, request_key's lookup) passes `key_permission`.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::{Hook, Operation, syscalls};

use crate::{enforce::enforce, task::Syscall};

/// The hooks also run when the kernel uses keys in a process's context for its own purposes
/// (reading `/proc/keys`, IMA and module signature checks, NFS id mapping, DNS resolution,
/// fscrypt): only the process's own key calls (`add_key`, `request_key`, `keyctl`, 64-bit,
/// 32-bit or x32) are its use of keys.
#[inline(always)]
fn is_key_call(syscall: &Syscall) -> bool {
    matches!(syscalls::operation(syscall.nr), Some(Operation::Keyctl))
}

#[inline(always)]
fn guard(ctx: &LsmContext, hook: Hook) -> i32 {
    // Both hooks have three arguments; the previous LSM's verdict comes fourth.
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    // key_alloc: the allocation flags; key_permission: the permission asked for.
    let detail: u64 = ctx.arg(2);
    enforce(ctx, Operation::Keyctl, hook, detail as i64, is_key_call).retval()
}

/// `key_alloc(key, cred, flags)`.
#[lsm(hook = "key_alloc")]
pub fn key_alloc(ctx: LsmContext) -> i32 {
    guard(&ctx, Hook::KeyAlloc)
}

/// `key_permission(key_ref, cred, need_perm)`.
#[lsm(hook = "key_permission")]
pub fn key_permission(ctx: LsmContext) -> i32 {
    guard(&ctx, Hook::KeyPermission)
}
