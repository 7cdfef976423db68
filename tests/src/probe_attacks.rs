//! The probe's attacks on the enforcer and on the runtime's setup processes (tamper protection,
//! arming holes), and the calls that must not be judged as a guarded operation (false
//! positives). Part of the `probe` binary (included with `#[path]`); each prints one JSON line
//! through `report`, with the fields its test reads.
use std::{ffi::CString, fs, os::unix::fs::MetadataExt, ptr};

use libc::{c_long, c_void};

/// Runs attack `op` with `args` (after the op name); `None` when `op` is not one of these.
pub fn run(op: &str, args: &[String], report: &dyn Fn(String)) -> Option<()> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let number = |i: usize| arg(i).parse::<i64>().unwrap_or(0);
    let plain = |outcome: Result<i64, i32>| {
        let (ret, errno) = match outcome {
            Ok(ret) => (ret, 0),
            Err(errno) => (-1, errno),
        };
        report(format!(
            "{{\"pid\":{},\"op\":\"{op}\",\"ret\":{ret},\"errno\":{errno}}}",
            std::process::id()
        ));
    };
    match op {
        "timens-offsets" => plain(timens_offsets()),
        "adjtimex-modes" => plain(adjtimex_modes(false, number(0) as u32)),
        "clock_adjtime-modes" => plain(adjtimex_modes(true, number(0) as u32)),
        "proc-keys-shows" => plain(proc_keys_shows(&arg(0))),
        "rmdir" => plain(path_call(libc::SYS_rmdir, &arg(0), None)),
        "unlink" => plain(path_call(libc::SYS_unlink, &arg(0), None)),
        "rename" => plain(path_call(libc::SYS_rename, &arg(0), Some(&arg(1)))),
        "ptrace-attach" => plain(ptrace_attach(number(0) as i32)),
        "vm-write" => plain(vm_write(number(0) as i32)),
        "proc-mem-write" => plain(proc_mem_write(number(0))),
        "proc-root" => plain(
            fs::read_dir(format!("/proc/{}/root/", number(0)))
                .map(|_| 0)
                .map_err(|err| err.raw_os_error().unwrap_or(0)),
        ),
        "proc-stat" => plain(
            fs::read_to_string(format!("/proc/{}/stat", number(0)))
                .map(|_| 0)
                .map_err(|err| err.raw_os_error().unwrap_or(0)),
        ),
        "bpf-load-lsm" => plain(bpf_load_lsm()),
        "bpf-obj-get" => plain(bpf_obj_get(&arg(0))),
        "bpf-link-detach-pin" => plain(link_detach_pin(&arg(0))),
        "tamper-ids" => report(tamper_ids()),
        "hold-mount" => hold_mount(&arg(0), report),
        "deep-move" => report(deep_move(&arg(0), number(1) as usize, &arg(2), false)),
        "deep-clone-into" => report(deep_move(&arg(0), number(1) as usize, &arg(2), true)),
        _ => return None,
    }
    Some(())
}

fn check(ret: c_long) -> Result<i64, i32> {
    if ret < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(ret)
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in arguments")
}

/// Sets the offsets of a new time namespace (CRIU, `unshare --time`): changes no clock.
fn timens_offsets() -> Result<i64, i32> {
    // SAFETY: plain system call.
    check(c_long::from(unsafe { libc::unshare(libc::CLONE_NEWTIME) }))?;
    fs::write("/proc/self/timens_offsets", "monotonic 10 0\n")
        .map(|()| 0)
        .map_err(|err| err.raw_os_error().unwrap_or(0))
}

/// adjtimex or clock_adjtime(CLOCK_REALTIME) with `modes` and nothing else set: 0 and
/// `ADJ_OFFSET_SS_READ` (0xa001) only read.
fn adjtimex_modes(clock_adjtime: bool, modes: u32) -> Result<i64, i32> {
    // SAFETY: timex is plain data.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = modes;
    // SAFETY: valid timex on the stack.
    check(unsafe {
        if clock_adjtime {
            libc::syscall(libc::SYS_clock_adjtime, libc::CLOCK_REALTIME, &mut tx)
        } else {
            libc::syscall(libc::SYS_adjtimex, &mut tx)
        }
    })
}

/// 1 when /proc/keys lists a key with this description, 0 when not.
fn proc_keys_shows(description: &str) -> Result<i64, i32> {
    let keys = fs::read_to_string("/proc/keys").map_err(|err| err.raw_os_error().unwrap_or(0))?;
    Ok(i64::from(keys.lines().any(|line| {
        line.split_whitespace()
            .nth(8)
            .is_some_and(|desc| desc.trim_end_matches(':') == description)
    })))
}

fn path_call(nr: c_long, path: &str, other: Option<&str>) -> Result<i64, i32> {
    let path = cstr(path);
    let other = other.map(cstr);
    // SAFETY: NUL-terminated paths that outlive the call.
    check(unsafe {
        libc::syscall(
            nr,
            path.as_ptr(),
            other.as_ref().map_or(ptr::null(), |o| o.as_ptr()),
        )
    })
}

fn ptrace_attach(pid: i32) -> Result<i64, i32> {
    // SAFETY: plain system calls; a successful attach is undone at once.
    let attached =
        check(unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, ptr::null_mut::<c_void>(), 0) });
    if attached.is_ok() {
        // SAFETY: detaching a tracee this process seized; no pointer arguments.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
    }
    attached
}

/// Writes one byte of `pid`'s memory through process_vm_writev, at the address of a static of
/// the same binary (the probe attacks a probe: same layout only when not randomised, so the
/// target address may be wrong; EFAULT then still proves the access was let through).
fn vm_write(pid: i32) -> Result<i64, i32> {
    static TARGET: [u8; 8] = [0; 8];
    let byte = [0x55u8];
    let local = libc::iovec {
        iov_base: byte.as_ptr() as *mut c_void,
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: TARGET.as_ptr() as *mut c_void,
        iov_len: 1,
    };
    // SAFETY: one local and one remote iovec; the kernel checks the remote address.
    check(unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) } as c_long)
}

/// Opens /proc/PID/mem for writing (the open is where the kernel checks access).
fn proc_mem_write(pid: i64) -> Result<i64, i32> {
    fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .map(|_| 0)
        .map_err(|err| err.raw_os_error().unwrap_or(0))
}

/// `bpf(cmd, attr)` with a 128-byte attribute block.
fn bpf(cmd: c_long, attr: &mut [u64; 16]) -> Result<i64, i32> {
    // SAFETY: a zero-padded attribute block of the size passed.
    check(unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128) })
}

/// Loads a BPF LSM program (an empty, invalid one: the enforcer refuses the command before the
/// kernel looks at it; outside every policy the kernel refuses it with EINVAL).
fn bpf_load_lsm() -> Result<i64, i32> {
    let mut attr = [0u64; 16];
    attr[0] = 29; // prog_type BPF_PROG_TYPE_LSM, insn_cnt 0
    bpf(5, &mut attr)
}

fn bpf_obj_get(path: &str) -> Result<i64, i32> {
    let path = cstr(path);
    let mut attr = [0u64; 16];
    attr[0] = path.as_ptr() as u64;
    bpf(7, &mut attr)
}

/// Opens a pinned link and detaches it (`BPF_LINK_DETACH`).
fn link_detach_pin(path: &str) -> Result<i64, i32> {
    let fd = bpf_obj_get(path)?;
    let mut attr = [0u64; 16];
    attr[0] = fd as u64;
    bpf(34, &mut attr)
}

/// The attack by id: walks every map, program and link id the kernel has and tries to get a
/// descriptor for each. With a map named `POLICIES` in hand it deletes its own cgroup's policy.
fn tamper_ids() -> String {
    let own_cgroup = own_cgroup_id();
    let mut parts = Vec::new();
    let mut deleted = -1i64;
    // (name, GET_NEXT_ID, GET_FD_BY_ID)
    for (kind, next_cmd, get_cmd) in [("map", 12, 14), ("prog", 11, 13), ("link", 31, 30)] {
        let (mut ids, mut refused, mut obtained) = (0, 0, 0);
        let mut id = 0u32;
        loop {
            let mut attr = [0u64; 16];
            attr[0] = u64::from(id);
            if bpf(next_cmd, &mut attr).is_err() {
                break;
            }
            id = (attr[0] >> 32) as u32;
            ids += 1;
            let mut attr = [0u64; 16];
            attr[0] = u64::from(id);
            match bpf(get_cmd, &mut attr) {
                Ok(fd) => {
                    obtained += 1;
                    if kind == "map" && map_name(fd) == "POLICIES" {
                        deleted = delete_key(fd, own_cgroup).map_or(0, |_| 1);
                    }
                    // SAFETY: our own descriptor.
                    unsafe { libc::close(fd as i32) };
                }
                Err(libc::EPERM) => refused += 1,
                Err(_) => {}
            }
        }
        parts.push(format!(
            "\"{kind}s\":{ids},\"{kind}_refused\":{refused},\"{kind}_obtained\":{obtained}"
        ));
    }
    format!(
        "{{\"pid\":{},\"op\":\"tamper-ids\",{},\"policy_deleted\":{deleted}}}",
        std::process::id(),
        parts.join(",")
    )
}

fn own_cgroup_id() -> u64 {
    let line = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let path = line
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .to_owned();
    fs::metadata(format!("/sys/fs/cgroup{path}")).map_or(0, |m| m.ino())
}

fn map_name(fd: i64) -> String {
    let mut info = [0u8; 96];
    let mut attr = [0u64; 16];
    attr[0] = fd as u64 | ((info.len() as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    if bpf(15, &mut attr).is_err() {
        return String::new();
    }
    let name = &info[24..40];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}

fn delete_key(fd: i64, key: u64) -> Result<i64, i32> {
    let mut attr = [0u64; 16];
    attr[0] = fd as u64;
    attr[1] = &key as *const u64 as u64;
    bpf(3, &mut attr)
}

/// Mounts a tmpfs on `dir` (in the probe's own mount namespace: `--unshare-mount yes`), reports,
/// and holds the mount until stdin closes.
fn hold_mount(dir: &str, report: &dyn Fn(String)) {
    let target = cstr(dir);
    let none = cstr("none");
    let tmpfs = cstr("tmpfs");
    // SAFETY: NUL-terminated strings that outlive the call.
    let ret = unsafe {
        libc::mount(
            none.as_ptr(),
            target.as_ptr(),
            tmpfs.as_ptr(),
            0,
            ptr::null(),
        )
    };
    report(format!(
        "{{\"pid\":{},\"op\":\"hold-mount\",\"ret\":{ret},\"errno\":0}}",
        std::process::id()
    ));
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// The coverage walk attack: nests `depth` cgroups below `cgroup` (which the probe's policy
/// covers), moves there, then starts a child in `cgroup` itself, either by writing the child's
/// pid into `cgroup.procs` or through `clone3(CLONE_INTO_CGROUP)`. The child mounts a tmpfs on
/// `target`; its outcome is reported.
fn deep_move(cgroup: &str, depth: usize, target: &str, clone_into: bool) -> String {
    let mut dir = String::from(cgroup);
    for i in 0..depth {
        dir = format!("{dir}/d{i}");
        if let Err(err) = fs::create_dir(&dir)
            && err.kind() != std::io::ErrorKind::AlreadyExists
        {
            return format!("{{\"op\":\"deep-move\",\"setup_error\":\"mkdir {dir}: {err}\"}}");
        }
    }
    if let Err(err) = fs::write(
        format!("{dir}/cgroup.procs"),
        std::process::id().to_string(),
    ) {
        return format!("{{\"op\":\"deep-move\",\"setup_error\":\"join {dir}: {err}\"}}");
    }
    let mut pipe_go = [0; 2];
    let mut pipe_out = [0; 2];
    // SAFETY: plain system calls on arrays of two descriptors.
    unsafe {
        libc::pipe(pipe_go.as_mut_ptr());
        libc::pipe(pipe_out.as_mut_ptr());
    }
    let child = if clone_into {
        let cgroup_fd = fs::File::open(cgroup).map(std::os::fd::IntoRawFd::into_raw_fd);
        let Ok(cgroup_fd) = cgroup_fd else {
            return "{\"op\":\"deep-move\",\"setup_error\":\"open cgroup\"}".into();
        };
        #[repr(C)]
        #[derive(Default)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
            set_tid: u64,
            set_tid_size: u64,
            cgroup: u64,
        }
        const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: cgroup_fd as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM: the child continues on a copy of this stack.
        unsafe { libc::syscall(libc::SYS_clone3, &args, size_of::<CloneArgs>()) as i32 }
    } else {
        // SAFETY: plain fork of a single-threaded process.
        unsafe { libc::fork() }
    };
    if child < 0 {
        return format!(
            "{{\"op\":\"deep-move\",\"setup_error\":\"fork: {}\"}}",
            std::io::Error::last_os_error()
        );
    }
    if child == 0 {
        // Wait until the parent has moved us, then mount.
        let mut byte = [0u8];
        // SAFETY: reads one byte from our pipe.
        unsafe { libc::read(pipe_go[0], byte.as_mut_ptr().cast(), 1) };
        let source = cstr("none");
        let dst = cstr(target);
        let fstype = cstr("tmpfs");
        // SAFETY: NUL-terminated strings that outlive the call.
        let ret = unsafe {
            libc::mount(
                source.as_ptr(),
                dst.as_ptr(),
                fstype.as_ptr(),
                0,
                ptr::null(),
            )
        };
        let errno = if ret < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        };
        let line = format!(
            "{{\"pid\":{},\"op\":\"deep-move\",\"ret\":{ret},\"errno\":{errno}}}",
            std::process::id()
        );
        // SAFETY: writes our line into the pipe, then leaves without unwinding.
        unsafe {
            libc::write(pipe_out[1], line.as_ptr().cast(), line.len());
            libc::_exit(0);
        }
    }
    if !clone_into {
        let _ = fs::write(format!("{cgroup}/cgroup.procs"), child.to_string());
    }
    // SAFETY: plain system calls on our own descriptors and child.
    unsafe {
        libc::write(pipe_go[1], b"g".as_ptr().cast(), 1);
        libc::close(pipe_out[1]);
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
    }
    let mut out = vec![0u8; 256];
    // SAFETY: reads into our buffer.
    let n = unsafe { libc::read(pipe_out[0], out.as_mut_ptr().cast(), out.len()) };
    out.truncate(n.max(0) as usize);
    String::from_utf8_lossy(&out).into_owned()
}
