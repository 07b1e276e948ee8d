//! The agent's system calls: every `unsafe` block of the agent is here, each in a small safe
//! function with the argument for why it is sound. Failures come back as `io::Error` (errno),
//! which the callers word in their own context.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

/// 0 is success; anything else is errno's error.
fn check(rc: libc::c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn c_string(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a path"))
}

/// mount(2); `data` is the filesystem's option string (a v1 hierarchy's controller).
pub fn mount(
    src: &str,
    dst: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let (s, d, t) = (c_string(src)?, c_string(dst)?, c_string(fstype)?);
    let data = data.map(c_string).transpose()?;
    let data_ptr = data
        .as_ref()
        .map_or(std::ptr::null(), |o| o.as_ptr().cast());
    // SAFETY: each pointer is to a NUL-terminated string that outlives the call (data may be
    // null: no options), which is all mount(2) reads.
    check(unsafe { libc::mount(s.as_ptr(), d.as_ptr(), t.as_ptr(), flags, data_ptr) })
}

/// umount(2).
pub fn umount(path: &str) -> io::Result<()> {
    let p = c_string(path)?;
    // SAFETY: a NUL-terminated path that outlives the call.
    check(unsafe { libc::umount(p.as_ptr()) })
}

/// swapon(2) with no flags (default priority).
pub fn swapon(path: &str) -> io::Result<()> {
    let p = c_string(path)?;
    // SAFETY: a NUL-terminated path that outlives the call.
    check(unsafe { libc::swapon(p.as_ptr(), 0) })
}

/// swapoff(2).
pub fn swapoff(path: &str) -> io::Result<()> {
    let p = c_string(path)?;
    // SAFETY: a NUL-terminated path that outlives the call.
    check(unsafe { libc::swapoff(p.as_ptr()) })
}

/// A serial port in raw mode: bytes pass as they are (no echo, no newline translation).
pub fn set_raw(port: &File) {
    let fd = port.as_raw_fd();
    // SAFETY: termios is plain data, so all zeros is a valid value for tcgetattr to fill; the
    // fd stays open while `port` is borrowed; the calls write only into `t`.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
    }
}

/// Waits until every byte written to the port has been sent (tcdrain(3)).
pub fn drain(port: &File) {
    // SAFETY: the fd stays open while `port` is borrowed; tcdrain touches no memory of ours.
    unsafe { libc::tcdrain(port.as_raw_fd()) };
}

/// Milliseconds since boot (CLOCK_BOOTTIME: the trace clock's and the host's timeline's).
pub fn uptime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives across the call.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain data (arrays of c_char), so all zeros is a valid value; uname
    // fills it and NUL-terminates each field within its array.
    let u = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        libc::uname(&mut u);
        u
    };
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Syncs and restarts; the kernel runs with `reboot=t` and QEMU with `-no-reboot`, so a restart
/// ends QEMU. If even that fails, returning from main panics the kernel, which also ends QEMU.
pub fn power_off() {
    // SAFETY: sync and reboot take no pointers; PID 1 (root) may reboot.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
}

/// The CPUs online now (at least 1).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf takes an integer and reads no memory of ours.
    (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as usize
}

/// Runs this thread on `cpu` only, or (None) on any of the first `cpus` CPUs again.
pub fn pin_to_cpu(cpu: Option<usize>, cpus: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array (all zeros: the empty set); CPU_SET only sets
    // bits below CPU_SETSIZE, which `cpus` (online CPUs) stays below; sched_setaffinity reads
    // the set, whose size it is given.
    check(unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..cpus {
            if cpu.is_none_or(|x| x == c) {
                libc::CPU_SET(c, &mut set);
            }
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    })
}

/// `size` bytes of private anonymous memory (zero-filled, page-aligned), mapped for the rest of
/// the process: a workload holds its memory until it exits.
pub fn map_anon(size: usize) -> io::Result<&'static mut [u64]> {
    // SAFETY: a new private anonymous mapping, readable and writable, is ours alone; with
    // MAP_FAILED handled it is `size` valid zeroed bytes, page-aligned (so u64-aligned), and
    // it is never unmapped, so the slice over its whole u64s stays valid for 'static.
    unsafe {
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(std::slice::from_raw_parts_mut(ptr as *mut u64, size / 8))
    }
}

/// Asks the kernel to reclaim these pages now (madvise(MADV_PAGEOUT)); their contents stay.
pub fn page_out(mem: &mut [u64]) -> io::Result<()> {
    let len = std::mem::size_of_val(mem);
    // SAFETY: the range is memory we own (a mapping from map_anon); MADV_PAGEOUT swaps its
    // pages out but never changes what they hold, so the slice stays valid.
    check(unsafe { libc::madvise(mem.as_mut_ptr().cast(), len, libc::MADV_PAGEOUT) })
}

/// Charges one page to this task's memory cgroup on the CPU it runs on, and frees it again.
pub fn charge_one_page() {
    // SAFETY: a new private anonymous page, ours alone, written once through its own pointer
    // (page-aligned and 4096 bytes long) and unmapped; nothing else refers to it.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if page != libc::MAP_FAILED {
            *(page as *mut u8) = 1;
            libc::munmap(page, 4096);
        }
    }
}

/// Sends `signal` to process `pid`.
pub fn kill(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Binds this process's future allocations to NUMA node `node` (set_mempolicy MPOL_BIND).
pub fn bind_memory_to_node(node: u32) -> io::Result<()> {
    let mask: libc::c_ulong = 1 << node;
    const MPOL_BIND: libc::c_long = 2;
    // SAFETY: the node mask is one c_ulong that outlives the call; maxnode 64 says it holds
    // 64 bits, which is what the kernel reads.
    let rc = unsafe { libc::syscall(libc::SYS_set_mempolicy, MPOL_BIND, &mask, 64) };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Brings the network interface `lo` up (SIOCSIFFLAGS with IFF_UP | IFF_RUNNING).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) takes integers; the descriptor is closed below on every path.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data (all zeros is valid); the name is NUL-terminated within its
    // array; the flags are the union field SIOCSIFFLAGS reads; ioctl reads the struct, which
    // outlives the call; the socket is ours to close.
    let (rc, err) = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let rc = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        let err = io::Error::last_os_error();
        libc::close(sock);
        (rc, err)
    };
    match rc {
        0 => Ok(()),
        _ => Err(err),
    }
}

/// How a child stands, asked without blocking (waitpid(2) with WNOHANG | WUNTRACED).
pub enum Waited {
    Running,
    /// Stopped by a signal (a worker that stopped itself with [`stop_self`]).
    Stopped,
    Ended(std::process::ExitStatus),
}

/// Whether our child `pid` is still running, stopped, or has ended (and is reaped).
pub fn wait_nohang(pid: u32) -> io::Result<Waited> {
    use std::os::unix::process::ExitStatusExt;
    let mut raw = 0;
    // SAFETY: waitpid writes one int into `raw`, which lives across the call; `pid` is our
    // own child.
    let rc = unsafe {
        libc::waitpid(
            pid as libc::pid_t,
            &mut raw,
            libc::WNOHANG | libc::WUNTRACED,
        )
    };
    Ok(match rc {
        rc if rc < 0 => return Err(io::Error::last_os_error()),
        0 => Waited::Running,
        _ if libc::WIFSTOPPED(raw) => Waited::Stopped,
        _ => Waited::Ended(std::process::ExitStatus::from_raw(raw)),
    })
}

/// Stops this process (SIGSTOP) until someone sends it SIGCONT.
pub fn stop_self() {
    // SAFETY: raise(3) takes an integer; stopping ourselves touches no memory.
    unsafe { libc::raise(libc::SIGSTOP) };
}

/// Names this task (PR_SET_NAME; the kernel keeps 15 bytes); a name with a NUL is left out.
pub fn set_name(name: &str) {
    if let Ok(name) = CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string that outlives the call.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    }
}
