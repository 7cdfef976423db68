//! Offsets of the kernel struct fields the BPF programs read, from the running kernel's BTF.
//!
//! aya 0.14 gives Rust BPF programs no CO-RE relocations, and field offsets in `task_struct`
//! differ between kernels (and configs), so user space finds them here and writes them into the
//! programs' read-only data ([`KernelLayout`], the `LAYOUT` global) before they load; the verifier
//! then sees constants.
//!
//! Only the part of BTF needed to walk struct members is read. aya-obj parses BTF but keeps its
//! type lookups private, and the one maintained stand-alone BTF crate (btf-rs) is LGPL, which does
//! not suit a statically linked binary; the format is small and stable (kernel
//! Documentation/bpf/btf.rst), so a reader of type records and member lists is a few dozen lines.
use std::{fs, path::Path};

use enforcer_common::KernelLayout;
use thiserror::Error;

use crate::paths::KERNEL_BTF;

#[derive(Debug, Error)]
pub enum LayoutError {
    /// The cause stays in the message, not as the error's source, so that the fix ends the line.
    #[error(
        "cannot read the kernel's BTF at {path}: {cause}; enforcer needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    Read { path: String, cause: std::io::Error },
    #[error("the kernel's BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("the kernel's BTF has no field {0}; this kernel is not supported")]
    MissingField(String),
}

/// Reads the running kernel's BTF and finds every offset of [`KernelLayout`].
pub fn from_sys_fs() -> Result<KernelLayout, LayoutError> {
    from_file(Path::new(KERNEL_BTF))
}

fn from_file(path: &Path) -> Result<KernelLayout, LayoutError> {
    let data = fs::read(path).map_err(|cause| LayoutError::Read {
        path: path.display().to_string(),
        cause,
    })?;
    let btf = Btf::parse(&data)?;
    let field = |path: &str| btf.offset_of(path);
    Ok(KernelLayout {
        task_pid: field("task_struct.pid")?,
        task_tgid: field("task_struct.tgid")?,
        task_start_time: field("task_struct.start_time")?,
        task_real_parent: field("task_struct.real_parent")?,
        task_cred: field("task_struct.cred")?,
        task_comm: field("task_struct.comm")?,
        task_seccomp_mode: field("task_struct.seccomp.mode")?,
        cred_uid: field("cred.uid")?,
        cred_gid: field("cred.gid")?,
        cred_cap_effective: field("cred.cap_effective")?,
        task_group_leader: field("task_struct.group_leader")?,
        task_cgroups: field("task_struct.cgroups")?,
        css_set_dfl_cgrp: field("css_set.dfl_cgrp")?,
        cgroup_kn: field("cgroup.kn")?,
        kernfs_node_id: field("kernfs_node.id")?,
        // Renamed `__parent` in 6.15.
        kernfs_node_parent: field("kernfs_node.parent")
            .or_else(|_| field("kernfs_node.__parent"))?,
        binprm_file: field("linux_binprm.file")?,
        file_dentry: field("file.f_path.dentry")?,
        dentry_name: field("dentry.d_name.name")?,
        task_mm: field("task_struct.mm")?,
        mm_exe_file: field("mm_struct.exe_file")?,
        file_inode: field("file.f_inode")?,
        task_ti_status: field("task_struct.thread_info.status")?,
        task_fs: field("task_struct.fs")?,
        fs_root_mnt: field("fs_struct.root.mnt")?,
        fs_root_dentry: field("fs_struct.root.dentry")?,
        task_nsproxy: field("task_struct.nsproxy")?,
        nsproxy_mnt_ns: field("nsproxy.mnt_ns")?,
        file_mnt: field("file.f_path.mnt")?,
        mount_mnt: field("mount.mnt")?,
        mount_mnt_ns: field("mount.mnt_ns")?,
        inode_sb: field("inode.i_sb")?,
        sb_magic: field("super_block.s_magic")?,
        sb_dev: field("super_block.s_dev")?,
        dentry_flags: field("dentry.d_flags")?,
        dentry_sb: field("dentry.d_sb")?,
        cgroup_level: field("cgroup.level")?,
        cgroup_ancestors: field("cgroup.ancestors")?,
        bpf_map_id: field("bpf_map.id")?,
        bpf_prog_aux: field("bpf_prog.aux")?,
        bpf_prog_aux_id: field("bpf_prog_aux.id")?,
        bpf_link_id: field("bpf_link.id")?,
        task_files: field("task_struct.files")?,
        files_fdt: field("files_struct.fdt")?,
        fdt_max_fds: field("fdtable.max_fds")?,
        fdt_fd: field("fdtable.fd")?,
        file_private_data: field("file.private_data")?,
        // A #define (not in BTF) up to 6.14, then an enum value.
        dcache_mounted: btf
            .enum_value(b"DCACHE_MOUNTED")?
            .map_or(DCACHE_MOUNTED_BEFORE_6_15, |v| v as u32),
        lsm_bpf_args: btf
            .func_args(b"bpf_lsm_bpf")?
            .ok_or_else(|| LayoutError::MissingField("bpf_lsm_bpf (the bpf LSM hook)".into()))?,
        _pad: 0,
    })
}

/// `DCACHE_MOUNTED` of include/linux/dcache.h up to 6.14, where it is a #define.
const DCACHE_MOUNTED_BEFORE_6_15: u32 = 0x0001_0000;

// BTF kinds (include/uapi/linux/btf.h) this reader needs by name; the rest are only sized.
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_ENUM64: u32 = 19;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// One type record: its kind, name, the type it refers to (modifiers and typedefs) and, for
/// structs and unions, where its member list starts in the type section.
struct Type {
    kind: u32,
    name_off: u32,
    /// `size` or `type` of `struct btf_type`, by kind.
    size_or_type: u32,
    kind_flag: bool,
    vlen: u32,
    /// Byte offset of the data that follows the record.
    data: usize,
}

struct Btf<'a> {
    types_section: &'a [u8],
    strings: &'a [u8],
    /// Index = type id; id 0 is `void`.
    types: Vec<Type>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, LayoutError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(LayoutError::Malformed("a record runs past the end"))
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, LayoutError> {
        // struct btf_header: magic u16, version u8, flags u8, hdr_len, type_off, type_len,
        // str_off, str_len (u32 each); section offsets count from the end of the header.
        if data.get(..2) != Some(&[0x9f, 0xeb][..]) {
            return Err(LayoutError::Malformed("not little-endian BTF"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let section = |off: usize, len: usize| -> Result<&'a [u8], LayoutError> {
            let start = hdr_len + u32_at(data, off)? as usize;
            let len = u32_at(data, len)? as usize;
            data.get(start..start + len)
                .ok_or(LayoutError::Malformed("a section runs past the end"))
        };
        let types_section = section(8, 12)?;
        let strings = section(16, 20)?;
        let mut types = vec![Type {
            kind: 0,
            name_off: 0,
            size_or_type: 0,
            kind_flag: false,
            vlen: 0,
            data: 0,
        }];
        let mut at = 0;
        while at < types_section.len() {
            let info = u32_at(types_section, at + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let data = at + 12;
            let extra = match kind {
                1 | 14 | 17 => 4,                            // int, var, decl_tag
                3 => 12,                                     // array
                4 | 5 => 12 * vlen as usize,                 // struct, union: members
                6 | 13 => 8 * vlen as usize,                 // enum, func_proto
                15 | 19 => 12 * vlen as usize,               // datasec, enum64
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0, // ptr, fwd, modifiers, func, float
                _ => return Err(LayoutError::Malformed("unknown type kind")),
            };
            types.push(Type {
                kind,
                name_off: u32_at(types_section, at)?,
                size_or_type: u32_at(types_section, at + 8)?,
                kind_flag: info >> 31 == 1,
                vlen,
                data,
            });
            at = data + extra;
        }
        Ok(Self {
            types_section,
            strings,
            types,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    fn get(&self, id: u32) -> Result<&Type, LayoutError> {
        self.types
            .get(id as usize)
            .ok_or(LayoutError::Malformed("a type id out of range"))
    }

    /// Follows typedefs and modifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Result<&Type, LayoutError> {
        for _ in 0..32 {
            let ty = self.get(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type;
                }
                _ => return Ok(ty),
            }
        }
        Err(LayoutError::Malformed("a typedef chain that does not end"))
    }

    /// Byte offset of `member` in the struct or union `ty`, looking inside anonymous members (the
    /// kernel groups many `task_struct` fields in unnamed structs and unions). Returns the offset
    /// and the member's type id.
    fn member(&self, ty: &Type, member: &[u8]) -> Result<Option<(u32, u32)>, LayoutError> {
        if ty.kind != KIND_STRUCT && ty.kind != KIND_UNION {
            return Ok(None);
        }
        for i in 0..ty.vlen as usize {
            let at = ty.data + 12 * i;
            let name_off = u32_at(self.types_section, at)?;
            let type_id = u32_at(self.types_section, at + 4)?;
            let raw_offset = u32_at(self.types_section, at + 8)?;
            // With kind_flag set the low 24 bits are the bit offset, the high 8 a bitfield size.
            let bits = if ty.kind_flag {
                raw_offset & 0x00ff_ffff
            } else {
                raw_offset
            };
            let name = self.name(name_off);
            if name == member {
                if bits % 8 != 0 {
                    return Err(LayoutError::Malformed("a wanted field is a bitfield"));
                }
                return Ok(Some((bits / 8, type_id)));
            }
            if name.is_empty()
                && let Some((inner, id)) = self.member(self.resolve(type_id)?, member)?
            {
                return Ok(Some((bits / 8 + inner, id)));
            }
        }
        Ok(None)
    }

    /// The value of the enumerator `name` in any enum, if the kernel has one.
    fn enum_value(&self, name: &[u8]) -> Result<Option<i64>, LayoutError> {
        for ty in &self.types {
            let (stride, wide) = match ty.kind {
                KIND_ENUM => (8, false),
                KIND_ENUM64 => (12, true),
                _ => continue,
            };
            for i in 0..ty.vlen as usize {
                let at = ty.data + stride * i;
                if self.name(u32_at(self.types_section, at)?) != name {
                    continue;
                }
                let low = u32_at(self.types_section, at + 4)?;
                let value = if wide {
                    i64::from(low) | (i64::from(u32_at(self.types_section, at + 8)?) << 32)
                } else {
                    i64::from(low as i32)
                };
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// How many parameters the kernel function `name` has, if BTF describes it.
    fn func_args(&self, name: &[u8]) -> Result<Option<u32>, LayoutError> {
        let Some(func) = self
            .types
            .iter()
            .find(|ty| ty.kind == KIND_FUNC && self.name(ty.name_off) == name)
        else {
            return Ok(None);
        };
        let proto = self.get(func.size_or_type)?;
        if proto.kind != KIND_FUNC_PROTO {
            return Err(LayoutError::Malformed("a function without a prototype"));
        }
        Ok(Some(proto.vlen))
    }

    /// Offset of a dotted path such as `task_struct.seccomp.mode` from the start of the struct.
    fn offset_of(&self, path: &str) -> Result<u32, LayoutError> {
        let missing = || LayoutError::MissingField(path.to_owned());
        let mut parts = path.split('.');
        let root = parts.next().ok_or_else(missing)?.as_bytes();
        // The defining record, not a forward declaration (those have kind fwd, not struct).
        let mut ty = self
            .types
            .iter()
            .find(|ty| ty.kind == KIND_STRUCT && ty.vlen > 0 && self.name(ty.name_off) == root)
            .ok_or_else(missing)?;
        let mut offset = 0;
        for part in parts {
            let (at, id) = self.member(ty, part.as_bytes())?.ok_or_else(missing)?;
            offset += at;
            ty = self.resolve(id)?;
        }
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_error_names_its_cause_once_and_ends_with_the_fix() {
        let err = LayoutError::Read {
            path: "/x".into(),
            cause: std::io::Error::other("boom"),
        };
        let printed = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(printed.matches("boom").count(), 1, "{printed}");
        assert!(printed.ends_with("CONFIG_DEBUG_INFO_BTF=y"), "{printed}");
    }

    /// The running kernel's BTF, when there is one (the development hosts and CI have it).
    fn host_btf() -> Option<Vec<u8>> {
        fs::read(KERNEL_BTF).ok()
    }

    #[test]
    fn finds_every_field_in_the_host_kernel() {
        if host_btf().is_none() {
            eprintln!("skipped: no {KERNEL_BTF}");
            return;
        }
        let layout = from_sys_fs().expect("layout");
        // Every field is past the start of its struct, and the nested ones add up.
        assert!(layout.task_pid > 0 && layout.task_tgid == layout.task_pid + 4);
        assert!(layout.task_comm > layout.task_cred);
        assert!(layout.cred_gid == layout.cred_uid + 4);
        assert!(layout.cred_cap_effective > layout.cred_gid);
        assert!(layout.task_seccomp_mode > 0 && layout.task_start_time > 0);
        // Workload arming's fields (`kernfs_node.parent` is `__parent` on this 6.18 host).
        assert!(layout.task_group_leader > 0 && layout.task_cgroups > 0 && layout.task_mm > 0);
        assert!(layout.kernfs_node_parent != layout.kernfs_node_id);
        assert!(layout.binprm_file > 0 || layout.file_inode > 0);
        // Tamper protection and the mount-point hooks.
        assert_eq!(layout.fs_root_dentry, layout.fs_root_mnt + 8, "struct path");
        assert!(layout.cgroup_ancestors > layout.cgroup_level);
        // 6.18: DCACHE_MOUNTED is an enum of bit 15, and the bpf hook has 4 arguments.
        assert_eq!(layout.dcache_mounted, 1 << 15);
        assert_eq!(layout.lsm_bpf_args, 4);
    }

    #[test]
    fn unknown_fields_are_named() {
        let Some(data) = host_btf() else {
            return;
        };
        let btf = Btf::parse(&data).expect("parse");
        let err = btf.offset_of("task_struct.no_such_field").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the kernel's BTF has no field task_struct.no_such_field; this kernel is not supported"
        );
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(matches!(
            Btf::parse(b"\x7fELF............................"),
            Err(LayoutError::Malformed(_))
        ));
        assert!(matches!(
            Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]),
            Err(LayoutError::Malformed(_))
        ));
    }
}
