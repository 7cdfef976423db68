//! Tries one guarded operation, optionally from inside a cgroup, and prints one JSON line with the
//! outcome: `{"pid":..,"op":..,"ret":..,"errno":..}` (`ret` -1 and `errno` set on failure; for
//! several steps, the first failing one). The VM tests drive it; it never judges.
use std::{
    env,
    ffi::{CString, c_char, c_long},
    fs,
    process::ExitCode,
    ptr,
};

use libc::{SYS_add_key, SYS_keyctl, SYS_request_key, c_int, c_void};

#[path = "../probe_attacks.rs"]
mod attacks;

type Outcome = Result<i64, i32>;

fn main() -> ExitCode {
    let mut args: Vec<String> = env::args().skip(1).collect();
    // Set-up options, applied in this order whatever order they come in: a private mount
    // namespace, drop a capability, join the cgroup (after the set-up's own mount calls, which a
    // policy there would see), install a seccomp filter (last: it may refuse calls the set-up
    // makes).
    let mut setup = Setup::default();
    // `--wait` (no value) comes after them.
    while args
        .first()
        .is_some_and(|a| a.starts_with("--") && a != "--wait")
        && args.len() >= 2
    {
        let value = args.remove(1);
        let option = args.remove(0);
        match option.as_str() {
            "--cgroup" => setup.cgroup = Some(value),
            "--unshare-mount" => setup.unshare_mount = value == "yes",
            "--drop-cap" => setup.drop_cap = value.parse().ok(),
            "--seccomp-eperm" => setup.seccomp_eperm = value.parse().ok(),
            "--cpu" => setup.cpu = value.parse().ok(),
            "--out" => setup.out = Some(value),
            "--as" => match value
                .split_once(':')
                .and_then(|(uid, gid)| Some((uid.parse().ok()?, gid.parse().ok()?)))
            {
                Some(ids) => setup.become_ids = Some(ids),
                None => {
                    eprintln!("probe: --as takes UID:GID, not {value}");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("probe: unknown option {other}");
                return ExitCode::from(2);
            }
        }
    }
    if let Err(err) = setup.apply() {
        eprintln!("probe: set-up failed: {err}");
        return ExitCode::from(2);
    }
    // `--wait`: block until a line arrives on stdin, so a test can move the probe between
    // cgroups (or change policies) before it acts, without an exec in between.
    if args.first().map(String::as_str) == Some("--wait") {
        args.remove(0);
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    let Some(op) = args.first().cloned() else {
        eprintln!("usage: probe [--cgroup DIR] [--as UID:GID] [--wait] OP [ARGS]");
        return ExitCode::from(2);
    };
    // `--out FILE`: the report goes there (a container's entrypoint reports into `/out`).
    let out = setup.out.clone();
    let report = move |line: String| match &out {
        Some(path) => {
            let _ = fs::write(path, format!("{line}\n"));
        }
        None => println!("{line}"),
    };
    if attacks::run(&op, &args[1..], &report).is_some() {
        return ExitCode::SUCCESS;
    }
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let number = |i: usize| arg(i).parse::<i64>().unwrap_or(0);
    let outcome = match op.as_str() {
        // A raw system call with integer arguments: `raw NR [ARG...]` (for the syscall layer's
        // tests, which call every guarded number with harmless arguments such as NULL).
        "raw" => raw(&args[1..]),
        // The same through the 32-bit entry (`int $0x80`), with the ia32 call number and up to
        // five arguments: `raw32 NR [ARG...]`.
        "raw32" => raw32(&args[1..]),
        "settimeofday" => settimeofday(number(1)),
        "clock_settime" => clock_settime(number(1)),
        "adjtimex-offset" => adjust_clock(false, number(1)),
        "clock_adjtime-offset" => adjust_clock(true, number(1)),
        "adjtimex-read" => adjtimex_read(),
        "settime-loop" => settime_loop(number(1)),
        "settime-until" => {
            let (calls, refused) = settime_until(&arg(1));
            println!(
                "{{\"pid\":{},\"op\":\"{op}\",\"ret\":{refused},\"errno\":0,\"calls\":{calls}}}",
                std::process::id()
            );
            return ExitCode::SUCCESS;
        }
        "mount-tmpfs" => mount(None, &arg(1), Some("tmpfs"), 0),
        "mount-bind" => mount(Some(&arg(1)), &arg(2), None, libc::MS_BIND),
        "mount-move" => mount(Some(&arg(1)), &arg(2), None, libc::MS_MOVE),
        "remount-ro" => mount(None, &arg(1), None, libc::MS_REMOUNT | libc::MS_RDONLY),
        "make-private" => mount(None, &arg(1), None, libc::MS_PRIVATE),
        "umount" => umount(&arg(1)),
        "fsmount-attach" => fsmount_attach(&arg(1)),
        "fsmount-detached" => fsmount_detached(),
        "open-tree-clone" => open_tree_clone(&arg(1), &arg(2)),
        "fspick-ro" => fspick_ro(&arg(1)),
        "mount-setattr-ro" => mount_setattr_ro(&arg(1)),
        "pivot-root" => pivot_root(&arg(1), &arg(2)),
        "add-key" => add_key(&arg(1), &arg(2)),
        "request-key" => request_key(&arg(1)),
        "join-session" => keyctl(
            KEYCTL_JOIN_SESSION_KEYRING,
            cstr(&arg(1)).as_ptr() as c_long,
            0,
            0,
        ),
        "keyctl-read" => keyctl_read(number(1)),
        "keyctl-update" => {
            let payload = arg(2);
            let data = payload.as_ptr() as c_long;
            keyctl(
                KEYCTL_UPDATE,
                number(1) as c_long,
                data,
                payload.len() as c_long,
            )
        }
        "keyctl-link" => keyctl(
            KEYCTL_LINK,
            number(1) as c_long,
            KEY_SPEC_USER_SESSION_KEYRING,
            0,
        ),
        "keyctl-search" => keyctl_search(&arg(1)),
        "keyctl-setperm" => keyctl(KEYCTL_SETPERM, number(1) as c_long, 0x3f3f_0000, 0),
        "keyctl-describe" => keyctl_describe(number(1)),
        "reboot-in-pid-namespace" => reboot_in_pid_namespace(),
        other => {
            eprintln!("probe: unknown operation {other}");
            return ExitCode::from(2);
        }
    };
    let (ret, errno) = match outcome {
        Ok(ret) => (ret, 0),
        Err(errno) => (-1, errno),
    };
    report(format!(
        "{{\"pid\":{},\"op\":\"{op}\",\"ret\":{ret},\"errno\":{errno}}}",
        std::process::id()
    ));
    ExitCode::SUCCESS
}

#[derive(Default)]
struct Setup {
    cgroup: Option<String>,
    unshare_mount: bool,
    drop_cap: Option<u32>,
    seccomp_eperm: Option<u32>,
    /// `--as UID:GID`: run the operation as these ids (after joining the cgroup).
    become_ids: Option<(u32, u32)>,
    /// `--cpu N`: run on CPU N only, set after joining the cgroup (joining a cgroup with the
    /// cpuset controller enabled, as runc leaves the root, resets the CPUs a process may use).
    cpu: Option<usize>,
    /// `--out FILE`: where the report goes instead of stdout.
    out: Option<String>,
}

impl Setup {
    fn apply(&self) -> Result<(), String> {
        if self.unshare_mount {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(|err| format!("unshare(CLONE_NEWNS): {err}"))?;
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|err| format!("make / private: {err}"))?;
        }
        if let Some(cap) = self.drop_cap {
            drop_effective_cap(cap)?;
        }
        if let Some(dir) = &self.cgroup {
            fs::write(
                format!("{dir}/cgroup.procs"),
                std::process::id().to_string(),
            )
            .map_err(|err| format!("cannot join {dir}: {err}"))?;
        }
        if let Some(cpu) = self.cpu {
            let mut one = nix::sched::CpuSet::new();
            one.set(cpu).map_err(|err| format!("CPU {cpu}: {err}"))?;
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one)
                .map_err(|err| format!("sched_setaffinity: {err}"))?;
        }
        if let Some((uid, gid)) = self.become_ids {
            // SAFETY: plain system calls; the group first, while the process may still change it.
            if unsafe { libc::setgid(gid) } != 0 || unsafe { libc::setuid(uid) } != 0 {
                return Err(format!("cannot become {uid}:{gid}"));
            }
        }
        if let Some(nr) = self.seccomp_eperm {
            seccomp_eperm(nr)?;
        }
        Ok(())
    }
}

/// Removes capability `cap` from this process's effective set (it stays permitted).
fn drop_effective_cap(cap: u32) -> Result<(), String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: header and two data words as capget(2) wants them.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(format!("capget: {}", std::io::Error::last_os_error()));
    }
    data[(cap / 32) as usize].effective &= !(1 << (cap % 32));
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Installs a seccomp filter that makes system call `nr` fail with EPERM (x86_64 only; every
/// other call is allowed).
fn seccomp_eperm(nr: u32) -> Result<(), String> {
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u16, k: u32, jt: u8, jf: u8| libc::sock_filter { code, jt, jf, k };
    let ld_w_abs = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    // struct seccomp_data: nr at 0, arch at 4.
    let filter = [
        stmt(ld_w_abs, 4),
        jump(jeq, AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, RET_ALLOW),
        stmt(ld_w_abs, 0),
        jump(jeq, nr, 0, 1),
        stmt(ret, RET_ERRNO | libc::EPERM as u32),
        stmt(ret, RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctl calls; the program outlives them (the kernel copies it).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program as *const libc::sock_fprog,
        ) != 0
        {
            return Err(format!("seccomp: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// `raw NR [ARG...]`: the system call with these integer arguments (decimal, may be negative).
/// An argument `buf:W` is a pointer to a zeroed 256-byte buffer whose first 8 bytes hold W (a
/// `struct timex` whose `modes` is W, a `timespec` of W seconds).
fn raw(args: &[String]) -> Outcome {
    let mut n = [0i64; 7];
    let mut buffers: Vec<Box<[i64; 32]>> = Vec::new();
    for (slot, arg) in n.iter_mut().zip(args) {
        *slot = match arg.strip_prefix("buf:") {
            Some(word) => {
                let mut buffer = Box::new([0i64; 32]);
                buffer[0] = word.parse().unwrap_or(0);
                let address = buffer.as_ptr() as i64;
                buffers.push(buffer);
                address
            }
            None => arg.parse().unwrap_or(0),
        };
    }
    // SAFETY: the caller picks arguments the call handles (NULL pointers, invalid descriptors);
    // the kernel checks every one of them.
    check(unsafe { libc::syscall(n[0], n[1], n[2], n[3], n[4], n[5], n[6]) })
}

fn raw32(args: &[String]) -> Outcome {
    let mut n = [0i64; 6];
    for (slot, arg) in n.iter_mut().zip(args) {
        *slot = arg.parse().unwrap_or(0);
    }
    let ret: i64;
    // SAFETY: an ia32 system call with integer arguments the kernel checks (see `raw`). rbx is
    // reserved by the compiler, so the first argument is swapped into it around the call.
    unsafe {
        std::arch::asm!(
            "xchg {b}, rbx",
            "int 0x80",
            "xchg {b}, rbx",
            b = inout(reg) n[1] => _,
            inlateout("rax") n[0] => ret,
            in("rcx") n[2],
            in("rdx") n[3],
            in("rsi") n[4],
            in("rdi") n[5],
        );
    }
    // eax holds the result: -errno on failure.
    let ret = i64::from(ret as i32);
    if ret < 0 { Err(-ret as i32) } else { Ok(ret) }
}

/// reboot(2) with wrong magic numbers, from the child of a new PID namespace's init: there the
/// kernel checks CAP_SYS_BOOT in the namespace's owner, and a valid call would kill that init
/// rather than reboot. The magic is wrong (EINVAL past the check); never pass the real one.
fn reboot_in_pid_namespace() -> Outcome {
    const WRONG_MAGIC: c_long = 0;
    /// Waits for `pid` and returns its exit code (128 + the signal when it was killed).
    fn exit_code(pid: libc::pid_t) -> c_int {
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        }
    }
    // SAFETY: unshare and fork in a single-threaded process; the children only make system
    // calls and leave with _exit.
    unsafe {
        if libc::unshare(libc::CLONE_NEWPID) != 0 {
            return check(-1);
        }
        // The first child is the new namespace's init; its child makes the call.
        let init = libc::fork();
        if init == 0 {
            let caller = libc::fork();
            if caller == 0 {
                let ret = libc::syscall(libc::SYS_reboot, WRONG_MAGIC, WRONG_MAGIC, 0, 0);
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                libc::_exit(if ret < 0 { errno } else { 0 });
            }
            libc::_exit(exit_code(caller));
        }
        match exit_code(init) {
            0 => Ok(0),
            errno => Err(errno),
        }
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in arguments")
}

/// The result of a raw system call: its return value, or errno.
fn check(ret: c_long) -> Outcome {
    if ret < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(ret)
    }
}

// Time. Raw system calls throughout: glibc implements settimeofday with clock_settime.

fn settimeofday(sec: i64) -> Outcome {
    let tv = libc::timeval {
        tv_sec: sec,
        tv_usec: 0,
    };
    // SAFETY: valid timeval on the stack, no timezone.
    check(unsafe { libc::syscall(libc::SYS_settimeofday, &tv, ptr::null::<c_void>()) })
}

fn clock_settime(sec: i64) -> Outcome {
    let ts = libc::timespec {
        tv_sec: sec,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec on the stack.
    check(unsafe { libc::syscall(libc::SYS_clock_settime, libc::CLOCK_REALTIME, &ts) })
}

/// Moves the clock to `target` seconds with ADJ_SETOFFSET through adjtimex or clock_adjtime.
fn adjust_clock(clock_adjtime: bool, target: i64) -> Outcome {
    // SAFETY: timex is plain data; zero is a valid "change nothing" value.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME).map_err(|e| e as i32)?;
    tx.modes = libc::ADJ_SETOFFSET | libc::ADJ_NANO;
    tx.time.tv_sec = target - now.tv_sec();
    tx.time.tv_usec = 0;
    // SAFETY: valid timex on the stack.
    check(unsafe {
        if clock_adjtime {
            libc::syscall(libc::SYS_clock_adjtime, libc::CLOCK_REALTIME, &mut tx)
        } else {
            libc::syscall(libc::SYS_adjtimex, &mut tx)
        }
    })
}

fn adjtimex_read() -> Outcome {
    // SAFETY: modes 0 only reads.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: valid timex on the stack.
    check(unsafe { libc::syscall(libc::SYS_adjtimex, &mut tx) })
}

/// settimeofday(NULL, NULL): passes the clock checks, changes nothing. True when refused.
fn settime_null_refused() -> bool {
    let null = ptr::null::<c_void>();
    // SAFETY: NULL arguments are valid for the settimeofday system call (glibc's wrapper is not).
    unsafe { libc::syscall(libc::SYS_settimeofday, null, null) != 0 }
}

/// [`settime_null_refused`] `count` times; returns how many were refused (a kill ends the
/// process instead).
fn settime_loop(count: i64) -> Outcome {
    Ok((0..count).filter(|_| settime_null_refused()).count() as i64)
}

/// [`settime_null_refused`] until `stop` exists; returns (calls, refused).
fn settime_until(stop: &str) -> (u64, u64) {
    let (mut calls, mut refused) = (0u64, 0u64);
    loop {
        if calls % 64 == 0 && std::path::Path::new(stop).exists() {
            return (calls, refused);
        }
        calls += 1;
        refused += u64::from(settime_null_refused());
    }
}

// Mounts.

fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> Outcome {
    let source = cstr(source.unwrap_or("none"));
    let target = cstr(target);
    let fstype = fstype.map(cstr);
    // SAFETY: NUL-terminated strings that outlive the call.
    check(c_long::from(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(ptr::null(), |t| t.as_ptr()),
            flags,
            ptr::null(),
        )
    }))
}

fn umount(target: &str) -> Outcome {
    let target = cstr(target);
    // SAFETY: NUL-terminated string.
    check(c_long::from(unsafe { libc::umount2(target.as_ptr(), 0) }))
}

const FSCONFIG_SET_FLAG: c_long = 0;
const FSCONFIG_CMD_CREATE: c_long = 6;
const FSCONFIG_CMD_RECONFIGURE: c_long = 7;
const MOVE_MOUNT_F_EMPTY_PATH: c_long = 4;
const OPEN_TREE_CLONE: c_long = 1;
const MOUNT_ATTR_RDONLY: u64 = 1;
const EMPTY: &[u8] = b"\0";

fn fsopen_tmpfs() -> Outcome {
    let fsname = cstr("tmpfs");
    // SAFETY: NUL-terminated name.
    let fs = check(unsafe { libc::syscall(libc::SYS_fsopen, fsname.as_ptr(), 0) })?;
    // SAFETY: fd from fsopen; CMD_CREATE takes no key or value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs,
            FSCONFIG_CMD_CREATE,
            ptr::null::<c_char>(),
            ptr::null::<c_void>(),
            0,
        )
    })?;
    Ok(fs)
}

/// fsopen + fsconfig + fsmount: a detached mount, returned as an fd.
fn fsmount() -> Outcome {
    let fs = fsopen_tmpfs()?;
    // SAFETY: fd from fsopen.
    check(unsafe { libc::syscall(libc::SYS_fsmount, fs, 0, 0) })
}

fn move_mount_fd(fd: i64, target: &str) -> Outcome {
    let target = cstr(target);
    // SAFETY: fd from fsmount/open_tree, empty path with F_EMPTY_PATH, NUL-terminated target.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            EMPTY.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

fn fsmount_attach(target: &str) -> Outcome {
    move_mount_fd(fsmount()?, target)
}

/// Uses a detached mount through its fd only: creates and writes a file in it.
fn fsmount_detached() -> Outcome {
    let mnt = fsmount()? as c_int;
    let name = cstr("written-through-fd");
    // SAFETY: directory fd from fsmount, NUL-terminated name.
    let file = check(c_long::from(unsafe {
        libc::openat(mnt, name.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600)
    }))?;
    // SAFETY: fd just opened, a static buffer.
    check(unsafe { libc::write(file as c_int, b"x".as_ptr().cast(), 1) } as c_long)
}

fn open_tree_clone(source: &str, target: &str) -> Outcome {
    let source = cstr(source);
    // SAFETY: NUL-terminated path.
    let tree = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            OPEN_TREE_CLONE,
        )
    })?;
    move_mount_fd(tree, target)
}

fn fspick_ro(target: &str) -> Outcome {
    let target = cstr(target);
    // SAFETY: NUL-terminated path.
    let fs = check(unsafe { libc::syscall(libc::SYS_fspick, libc::AT_FDCWD, target.as_ptr(), 0) })?;
    let ro = cstr("ro");
    // SAFETY: fd from fspick, NUL-terminated key, no value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs,
            FSCONFIG_SET_FLAG,
            ro.as_ptr(),
            ptr::null::<c_void>(),
            0,
        )
    })?;
    // SAFETY: as above.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs,
            FSCONFIG_CMD_RECONFIGURE,
            ptr::null::<c_char>(),
            ptr::null::<c_void>(),
            0,
        )
    })
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn mount_setattr_ro(target: &str) -> Outcome {
    let target = cstr(target);
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: NUL-terminated path, attr of the size passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            0,
            &attr,
            size_of::<MountAttr>(),
        )
    })
}

fn pivot_root(new_root: &str, put_old: &str) -> Outcome {
    let new_root = cstr(new_root);
    let put_old = cstr(put_old);
    // SAFETY: NUL-terminated paths.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
}

// Keys.

const KEY_SPEC_USER_KEYRING: c_long = -4;
const KEY_SPEC_USER_SESSION_KEYRING: c_long = -5;
const KEYCTL_UPDATE: c_long = 2;
const KEYCTL_SETPERM: c_long = 5;
const KEYCTL_DESCRIBE: c_long = 6;
const KEYCTL_LINK: c_long = 8;
const KEYCTL_SEARCH: c_long = 10;
const KEYCTL_READ: c_long = 11;
const KEYCTL_JOIN_SESSION_KEYRING: c_long = 1;

fn keyctl(cmd: c_long, a: c_long, b: c_long, c: c_long) -> Outcome {
    // SAFETY: callers pass pointers valid for the command, or plain numbers.
    check(unsafe { libc::syscall(SYS_keyctl, cmd, a, b, c, 0) })
}

/// A `user` key in the user keyring (so it outlives this process).
fn add_key(description: &str, payload: &str) -> Outcome {
    let kind = cstr("user");
    let description = cstr(description);
    // SAFETY: NUL-terminated strings, payload pointer and length match.
    check(unsafe {
        libc::syscall(
            SYS_add_key,
            kind.as_ptr(),
            description.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_USER_KEYRING,
        )
    })
}

fn request_key(description: &str) -> Outcome {
    let kind = cstr("user");
    let description = cstr(description);
    // SAFETY: NUL-terminated strings, no callout, no destination keyring.
    check(unsafe {
        libc::syscall(
            SYS_request_key,
            kind.as_ptr(),
            description.as_ptr(),
            ptr::null::<c_char>(),
            0,
        )
    })
}

fn keyctl_read(serial: i64) -> Outcome {
    let mut buffer = [0u8; 256];
    keyctl(
        KEYCTL_READ,
        serial as c_long,
        buffer.as_mut_ptr() as c_long,
        buffer.len() as c_long,
    )
}

fn keyctl_describe(serial: i64) -> Outcome {
    let mut buffer = [0u8; 256];
    keyctl(
        KEYCTL_DESCRIBE,
        serial as c_long,
        buffer.as_mut_ptr() as c_long,
        buffer.len() as c_long,
    )
}

fn keyctl_search(description: &str) -> Outcome {
    let kind = cstr("user");
    let description = cstr(description);
    keyctl(
        KEYCTL_SEARCH,
        KEY_SPEC_USER_KEYRING,
        kind.as_ptr() as c_long,
        description.as_ptr() as c_long,
    )
}
