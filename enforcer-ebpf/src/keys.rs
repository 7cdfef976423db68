//! `keyctl`: kernel keys and keyrings. Creating any key or keyring (add_key, joining or creating a
//! session keyring, request_key's construction) passes `key_alloc`; every use of an existing key
//! (read, update, link, search, setperm, describe, request_key's lookup) passes `key_permission`.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::{Hook, Operation};

use crate::policy::enforce;

#[inline(always)]
fn guard(ctx: &LsmContext, hook: Hook) -> i32 {
    // Both hooks have three arguments; the previous LSM's verdict comes fourth.
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    // key_alloc: the allocation flags; key_permission: the permission asked for.
    let detail: u64 = ctx.arg(2);
    enforce(ctx, Operation::Keyctl, hook, detail as i64, |_| true).retval()
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
