//! The guest agent: runs as /init in the lab VM, sets the lab up, runs its steps, reports, powers off.
//!
//! It is PID 1, so it never panics or exits its way out: every failure becomes an `Error` event,
//! the stream always ends with `End`, and the VM always powers off. Workloads run in child
//! processes (this binary again, as `/init worker <step-json> <cgroup-dir>`) that move themselves
//! into their cgroup (v2, or v1 for a lab's v1 groups) before touching memory; the agent itself stays in the root cgroup with
//! oom_score_adj -1000.

use guest::counters::{FAMILIES, Family, Scope, Source};
use guest::event::{Event, Exit, Frame, HEALTH_LOG_CAP, KmsgRecord, encode_frame};
use guest::parse::{parse_cpu_ticks, parse_key_values, parse_meminfo, parse_psi, parse_single};
use guest::spec::{Kind, LabSpec, Step, StepKind, SwapKind};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RESULT_PORT: &str = "/dev/ttyS1";
const PLAN: &str = "/lab/plan.json";
const CGROOT: &str = "/sys/fs/cgroup";
const DATA: &str = "/data";
const TMPFS: &str = "/lab-tmp";
const V1ROOT: &str = "/cgroup-v1";
const TRACEFS: &str = "/sys/kernel/tracing";

type Result<T, E = String> = std::result::Result<T, E>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        // A workload child: its failures are its exit status and stderr, read by the agent.
        let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
        let code = match worker(arg(2), arg(3)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("worker: {e}");
                2
            }
        };
        std::process::exit(code);
    }
    if args.get(1).map(String::as_str) == Some("step") {
        // `lab-step NAME` in the --shell: run one of the lab's steps by hand.
        std::process::exit(
            match lab_step(args.get(2).map(String::as_str).unwrap_or("")) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("lab-step: {e}");
                    1
                }
            },
        );
    }
    if std::env::var("kernel_lab").as_deref() == Ok("floor") {
        // `kernel_lab=floor` on the kernel command line: measure the boot floor, do nothing.
        power_off();
        return;
    }
    std::panic::set_hook(Box::new(|info| eprintln!("agent: {info}")));
    let mut out = Emitter::open();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| agent(&mut out)));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => out.error("agent", e),
        Err(_) => out.error("agent", "the agent panicked (see the console)".into()),
    }
    out.send(kernel_health());
    out.end();
    power_off();
}

/// Writes framed events to the result port.
struct Emitter {
    port: Option<File>,
    seq: u64,
}

impl Emitter {
    fn open() -> Emitter {
        let _ = mount("devtmpfs", "/dev", "devtmpfs", 0);
        let port = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(RESULT_PORT)
            .map_err(|e| eprintln!("agent: cannot open {RESULT_PORT}: {e}"))
            .ok();
        if let Some(p) = &port {
            set_raw(p);
        }
        Emitter { port, seq: 0 }
    }

    fn send(&mut self, event: Event) {
        let frame = Frame {
            seq: self.seq,
            t_ms: uptime_ms(),
            event,
        };
        self.seq += 1;
        let line = encode_frame(&frame);
        if let Some(p) = &mut self.port
            && let Err(e) = p.write_all(line.as_bytes())
        {
            eprintln!("agent: writing the result port failed: {e}");
        }
    }

    fn error(&mut self, context: &str, message: String) {
        eprintln!("agent: {context}: {message}");
        self.send(Event::Error {
            context: context.into(),
            message,
        });
    }

    fn end(&mut self) {
        let frames = self.seq;
        self.send(Event::End { frames });
        if let Some(p) = &self.port {
            // The UART drains slowly: wait until every byte has left before powering off.
            unsafe { libc::tcdrain(p.as_raw_fd()) };
        }
    }
}

fn agent(out: &mut Emitter) -> Result<()> {
    out.send(Event::Hello {
        kernel: kernel_release(),
    });
    if std::env::var("kernel_lab").as_deref() == Ok("crash") {
        // Fault injection for kernel-lab's own tests (`--kernel-arg kernel_lab=crash`): PID 1
        // dies without its end frame, as a real crash would.
        std::process::abort();
    }
    let plan = fs::read_to_string(PLAN).map_err(|e| format!("reading {PLAN}: {e}"))?;
    let spec: LabSpec = serde_json::from_str(&plan).map_err(|e| format!("parsing {PLAN}: {e}"))?;
    let probe = setup(&spec)?;
    inject_kernel_faults();
    out.send(Event::Ready);
    let mut start = sample(&spec, &probe);
    if let Some(f) = FAMILIES
        .iter()
        .find(|f| f.prefix == "zoneinfo." && !spec.refers_to(f.prefix))
    {
        // Once, for the timeline's reference lines: the zone watermarks.
        let zones = read_family(f, "").into_iter().flatten();
        start.extend(zones.map(|(k, n)| (format!("{}{k}", f.prefix), n)));
    }
    out.send(Event::Sample {
        label: "start".into(),
        values: start,
    });
    if std::env::var("kernel_lab").as_deref() == Ok("shell") {
        return shell(&spec);
    }
    let mut holders = Vec::new();
    let mut workers: BTreeMap<String, String> = BTreeMap::new();
    let last_v1 = spec.last_v1_step();
    for (i, step) in spec.steps.iter().enumerate() {
        if spec.vm.trace {
            // Opening `trace` for writing with truncation empties the ring buffer.
            let _ = fs::write(format!("{TRACEFS}/trace"), "");
        }
        out.send(Event::StepStart {
            step: step.name().into(),
        });
        let started = Instant::now();
        let mut held = None;
        match run_step(&spec, step, &probe, out, &mut holders, &mut workers) {
            Ok(o) => {
                held = o.held;
                out.send(Event::StepEnd {
                    step: step.name().into(),
                    exit: o.exit,
                    wall_ms: o.done.duration_since(started).as_millis() as u64,
                    stderr: o.stderr,
                    stdout: o.stdout,
                })
            }
            Err(e) => out.error(&format!("step {}", step.name()), e),
        }
        if spec.vm.trace {
            let text = read(&format!("{TRACEFS}/trace")).unwrap_or_default();
            // Comments dropped and runs of spaces squeezed: the same fields, fewer bytes.
            let lines = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            out.send(Event::Trace {
                step: step.name().into(),
                lines,
                workers: workers.clone(),
            });
        }
        let mut values = held.unwrap_or_else(|| sample(&spec, &probe));
        let mut switched = Ok(());
        if Some(i) == last_v1 {
            // The v1 groups go, the memory controller moves to v2 and the v2 groups appear:
            // the sample keeps the v1 groups' files as they were after the step, and adds the
            // v2 groups (at zero) so that the next step has its "before".
            switched = v1_to_v2(&spec);
            for (k, v) in sample(&spec, &probe) {
                values.insert(k, v);
            }
        }
        out.send(Event::Sample {
            label: format!("after:{}", step.name()),
            values,
        });
        switched?;
    }
    for mut h in holders {
        let _ = h.kill();
        let _ = h.wait();
    }
    Ok(())
}

/// Mounts, sysctls, swap, disks and cgroups; returns the v1 probe's counters (if asked for).
fn setup(spec: &LabSpec) -> Result<BTreeMap<String, u64>> {
    for dir in ["/proc", "/sys", DATA] {
        let _ = fs::create_dir_all(dir);
    }
    mount("proc", "/proc", "proc", 0)?;
    mount("sysfs", "/sys", "sysfs", 0)?;
    mount("cgroup2", CGROOT, "cgroup2", 0)?;
    write("/proc/self/oom_score_adj", "-1000")?;
    for (key, value) in &spec.vm.sysctl {
        write(&format!("/proc/sys/{}", key.replace('.', "/")), value)?;
    }
    for (path, value) in &spec.vm.sysfs {
        write(&format!("/sys/{path}"), value)?;
    }
    if let Some(swap) = &spec.vm.swap {
        match swap.kind {
            SwapKind::Zram => zram_swap(swap.size.0)?,
            SwapKind::Disk => disk_swap(swap.size.0)?,
        }
    }
    let uses = |kind: Kind| spec.steps.iter().any(|s| s.kind.kind() == kind);
    if uses(Kind::Exec) && fs::metadata("/sys/class/net/lo").is_ok() {
        loopback_up()?;
    }
    let writes = uses(Kind::WriteFile) || uses(Kind::Exec);
    if uses(Kind::ReadFile) || writes {
        mount_data_disk(writes)?;
    }
    if uses(Kind::TmpfsFill) {
        let _ = fs::create_dir_all(TMPFS);
        mount("tmpfs", TMPFS, "tmpfs", 0)?;
    }
    if spec.vm.trace {
        // The host asks for all of this on the kernel command line (cheaper while booting);
        // set what is not already so, e.g. when booted without those words.
        mount("tracefs", TRACEFS, "tracefs", 0)?;
        let clock = read(&format!("{TRACEFS}/trace_clock")).unwrap_or_default();
        if !clock.contains("[boot]") {
            write(&format!("{TRACEFS}/trace_clock"), "boot")?;
        }
        for tp in guest::TRACEPOINTS {
            let enable = format!("{TRACEFS}/events/vmscan/{tp}/enable");
            if read(&enable).is_some_and(|v| v.trim() == "0") {
                write(&enable, "1")?;
            }
        }
        if let Err(e) = free_probes() {
            // Only the free-page facts are missing then; the lab says so where it needs them.
            eprintln!("agent: no free-page probes: {e}");
        }
        write(&format!("{TRACEFS}/tracing_on"), "1")?;
    }
    if let Some(on) = spec.vm.mglru {
        write("/sys/kernel/mm/lru_gen/enabled", if on { "y" } else { "n" })?;
    }
    let v1_groups = spec.cgroups.iter().any(|c| c.v1.is_some());
    let probe = if spec.vm.cgroup_v1_probe || v1_groups {
        cgroup_v1_mount()?;
        let probe = if spec.vm.cgroup_v1_probe {
            cgroup_v1_probe()
        } else {
            BTreeMap::new()
        };
        if v1_groups {
            cgroups_v1(spec)?;
            if spec.last_v1_step().is_none() {
                v1_to_v2(spec)?;
            }
            // Otherwise the v2 groups are set up once the steps in v1 groups are done.
            return Ok(probe);
        }
        cgroup_v1_unmount()?;
        probe
    } else {
        BTreeMap::new()
    };
    cgroups_v2(spec)?;
    Ok(probe)
}

/// Event probes that record the machine's free pages beside some vmscan tracepoints
/// (guest::FREE_PROBES).
fn free_probes() -> Result<()> {
    // Appended, never truncated: truncating dynamic_events deletes every probe.
    let mut defs = OpenOptions::new()
        .append(true)
        .open(format!("{TRACEFS}/dynamic_events"))
        .map_err(|e| format!("opening {TRACEFS}/dynamic_events: {e}"))?;
    for tp in guest::FREE_PROBES {
        let def = format!("e:kernel_lab/{tp}_free vmscan/{tp} free=@vm_zone_stat:s64\n");
        defs.write_all(def.as_bytes())
            .map_err(|e| format!("defining {def:?}: {e}"))?;
    }
    write(&format!("{TRACEFS}/events/kernel_lab/enable"), "1")
}

/// Gives the memory controller to cgroup v2 (`+memory`) and creates the v2 groups.
fn cgroups_v2(spec: &LabSpec) -> Result<()> {
    // After the v1 hierarchy is unmounted the controller returns to v2 once the v1 root is
    // destroyed (RCU): retry.
    let v1_used = spec.vm.cgroup_v1_probe || spec.cgroups.iter().any(|c| c.v1.is_some());
    let started = Instant::now();
    while let Err(e) = write(&format!("{CGROOT}/cgroup.subtree_control"), "+memory") {
        if !v1_used || started.elapsed() > Duration::from_secs(5) {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    create_cgroups(spec)?;
    if spec.vm.zswap {
        // The host put zswap.enabled=1 on the command line; a kernel without CONFIG_ZSWAP
        // ignores that word.
        let on = read("/sys/module/zswap/parameters/enabled").unwrap_or_default();
        if on.trim() != "Y" {
            return Err(
                "zswap is not enabled (/sys/module/zswap/parameters/enabled is not Y): the kernel needs CONFIG_ZSWAP".into(),
            );
        }
    }
    Ok(())
}

/// Creates the lab's cgroup v1 memory groups under the v1 hierarchy (mounted).
fn cgroups_v1(spec: &LabSpec) -> Result<()> {
    for cg in &spec.cgroups {
        let Some(v1) = &cg.v1 else { continue };
        let dir = format!("{V1ROOT}/{}", cg.name);
        fs::create_dir(&dir).map_err(|e| format!("creating cgroup v1 group {dir}: {e}"))?;
        if let Some(max) = cg.memory_max {
            write(&format!("{dir}/memory.limit_in_bytes"), &max.0.to_string())?;
        }
        if let Some(sw) = v1.swappiness {
            write(&format!("{dir}/memory.swappiness"), &sw.to_string())?;
        }
    }
    Ok(())
}

/// After the last step in a v1 group: removes the v1 groups, waits until the kernel has freed
/// them (a group lingers while anything is still charged to it), unmounts the v1 hierarchy and
/// sets up cgroup v2.
fn v1_to_v2(spec: &LabSpec) -> Result<()> {
    let drain = format!("{V1ROOT}/kernel-lab-drain");
    fs::create_dir(&drain).map_err(|e| format!("creating {drain}: {e}"))?;
    drain_charge_caches(&drain)?;
    let dirs = spec
        .cgroups
        .iter()
        .filter(|c| c.v1.is_some())
        .map(|c| format!("{V1ROOT}/{}", c.name))
        .chain([drain]);
    for dir in dirs {
        fs::remove_dir(&dir).map_err(|e| format!("removing cgroup v1 group {dir}: {e}"))?;
    }
    // /proc/cgroups counts the memory hierarchy's groups, the root included, until each is freed.
    let groups = || {
        read("/proc/cgroups")?
            .lines()
            .find(|l| l.starts_with("memory\t"))
            .and_then(|l| l.split('\t').nth(2)?.parse::<u64>().ok())
    };
    let started = Instant::now();
    while groups() != Some(1) {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "the cgroup v1 groups were not freed within 10 s (/proc/cgroups counts {:?} memory groups): something is still charged to them",
                groups()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cgroup_v1_unmount()?;
    cgroups_v2(spec)
}

/// Each CPU keeps a cache of pre-charged pages for the last group it charged, with a reference
/// to that group (memcg_stock, mm/memcontrol.c); a cache whose pages are used up keeps the
/// reference, and drain_all_stock() at the group's removal skips it, so a group that charged
/// its last pages at its limit would linger as a dying memcg. Charging one page on every CPU to
/// the fresh group `drain` (far from any limit) makes each CPU's cache switch to it:
/// __refill_stock() drops the old reference and keeps spare pages, which drain's own removal
/// then returns. No heap allocation while the agent is in `drain`: it would stay charged there.
fn drain_charge_caches(drain: &str) -> Result<()> {
    let open = |path: String| {
        OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| format!("opening {path}: {e}"))
    };
    let (into, back) = (
        open(format!("{drain}/cgroup.procs"))?,
        open(format!("{V1ROOT}/cgroup.procs"))?,
    );
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let pin = |cpu: Option<usize>| unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..cpus {
            if cpu.is_none_or(|x| x == c) {
                libc::CPU_SET(c, &mut set);
            }
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    let mut failed = None;
    for cpu in 0..cpus {
        unsafe {
            if pin(Some(cpu)) != 0 || libc::write(into.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                failed = Some(cpu);
                break;
            }
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
            libc::write(back.as_raw_fd(), b"0".as_ptr().cast(), 1);
        }
    }
    pin(None);
    match failed {
        Some(cpu) => Err(format!(
            "charging a page on CPU {cpu} in {drain}: {}",
            errno()
        )),
        None => Ok(()),
    }
}

/// The directory of one of the lab's groups: under the v1 hierarchy for v1 groups.
fn cgroup_dir(spec: &LabSpec, name: &str) -> String {
    let v1 = spec
        .cgroups
        .iter()
        .any(|c| c.name == name && c.v1.is_some());
    format!("{}/{name}", if v1 { V1ROOT } else { CGROOT })
}

/// Creates the lab's groups, parents first: a parent gets `+memory` in its
/// cgroup.subtree_control before its children are made, so they have the memory controller.
fn create_cgroups(spec: &LabSpec) -> Result<()> {
    let mut groups: Vec<_> = spec.cgroups.iter().filter(|c| c.v1.is_none()).collect();
    groups.sort_by_key(|c| c.depth());
    for cg in groups {
        if let Some(parent) = cg.parent() {
            let control = format!("{CGROOT}/{parent}/cgroup.subtree_control");
            if !read(&control).unwrap_or_default().contains("memory") {
                write(&control, "+memory")?;
            }
        }
        let dir = format!("{CGROOT}/{}", cg.name);
        fs::create_dir(&dir).map_err(|e| format!("creating cgroup {dir}: {e}"))?;
        for (file, value) in cg.files() {
            write(&format!("{dir}/{file}"), &value)?;
        }
    }
    Ok(())
}

/// Brings the loopback interface up (a kernel with networking starts with it down), for
/// programs that talk TCP to themselves, such as the selftests' socket-accounting test.
fn loopback_up() -> Result<()> {
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if sock < 0 {
        return Err(format!("socket for lo: {}", errno()));
    }
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let rc = unsafe {
        req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        libc::ioctl(sock, libc::SIOCSIFFLAGS, &req)
    };
    let err = errno();
    unsafe { libc::close(sock) };
    if rc != 0 {
        return Err(format!("bringing lo up: {err}"));
    }
    Ok(())
}

/// The ext4 data disk (the virtio disk with the data serial, else /dev/vda); QEMU attaches it
/// with snapshot=on, so writes never persist.
fn mount_data_disk(writable: bool) -> Result<()> {
    let flags = if writable { 0 } else { libc::MS_RDONLY };
    let dev = disk_by_serial(guest::DATA_DISK_SERIAL).unwrap_or_else(|| "/dev/vda".into());
    mount(&dev, DATA, "ext4", flags)
}

/// The /dev path of the virtio disk the host gave this serial number.
fn disk_by_serial(serial: &str) -> Option<String> {
    fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|d| read(&format!("/sys/block/{d}/serial")).is_some_and(|s| s.trim() == serial))
        .map(|d| format!("/dev/{d}"))
}

/// Sizes zram0, writes a swap signature on it and enables it.
fn zram_swap(size: u64) -> Result<()> {
    write("/sys/block/zram0/disksize", &size.to_string())?;
    swap_on("/dev/zram0", size)
}

/// The swap disk: the virtio disk whose serial is `guest::SWAP_DISK_SERIAL` (the host attaches
/// it beside the data disk; their order is not fixed).
fn disk_swap(size: u64) -> Result<()> {
    let Some(dev) = disk_by_serial(guest::SWAP_DISK_SERIAL) else {
        return Err("no swap disk: no virtio disk has the serial the host gave it".into());
    };
    swap_on(&dev, size)
}

/// Writes a swap signature (mkswap's header: version 1, the last page) and enables the swap.
fn swap_on(device: &str, size: u64) -> Result<()> {
    let page = 4096usize;
    let mut header = vec![0u8; page];
    header[1024..1028].copy_from_slice(&1u32.to_le_bytes()); // version
    let last_page = (size / page as u64 - 1) as u32;
    header[1028..1032].copy_from_slice(&last_page.to_le_bytes());
    header[page - 10..].copy_from_slice(b"SWAPSPACE2");
    let mut dev = OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(|e| format!("opening {device}: {e}"))?;
    dev.write_all(&header)
        .map_err(|e| format!("writing the swap header: {e}"))?;
    dev.sync_all()
        .map_err(|e| format!("writing the swap header: {e}"))?;
    drop(dev);
    let path = CString::new(device).unwrap();
    if unsafe { libc::swapon(path.as_ptr(), 0) } != 0 {
        return Err(format!("swapon {device}: {}", errno()));
    }
    Ok(())
}

/// How a step ended: its workload's exit and output, when its work was done, and the counters
/// sampled at that moment (a workload that finished stops itself there, still holding its
/// memory, until they are read).
struct StepOutcome {
    exit: Exit,
    stderr: String,
    stdout: String,
    done: Instant,
    /// `after:<step>` as sampled while the finished workload held its memory.
    held: Option<BTreeMap<String, u64>>,
}

impl StepOutcome {
    fn ok() -> Self {
        StepOutcome {
            exit: Exit::Exited { code: 0 },
            stderr: String::new(),
            stdout: String::new(),
            done: Instant::now(),
            held: None,
        }
    }
}

/// The environment variable that asks a worker to stop itself (SIGSTOP) when its work is done.
const HOLD_ENV: &str = "KERNEL_LAB_HOLD";

/// Runs one step; workloads run in a child process and their ending is the result, with what
/// it wrote to stderr and stdout.
fn run_step(
    spec: &LabSpec,
    step: &Step,
    probe: &BTreeMap<String, u64>,
    out: &mut Emitter,
    holders: &mut Vec<std::process::Child>,
    workers: &mut BTreeMap<String, String>,
) -> Result<StepOutcome> {
    let mut ticker = Ticker::new(spec, step);
    match &step.kind {
        StepKind::Sleep { ms } => {
            let until = Instant::now() + Duration::from_millis(*ms);
            while Instant::now() < until {
                ticker.tick(out);
                std::thread::sleep(
                    until
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(5)),
                );
            }
            ticker.finish(out);
            return Ok(StepOutcome::ok());
        }
        StepKind::Sysctl { set } => {
            for (key, value) in set {
                write(&format!("/proc/sys/{}", key.replace('.', "/")), value)?;
            }
            ticker.finish(out);
            return Ok(StepOutcome::ok());
        }
        _ => {}
    }
    let json = serde_json::to_string(step).map_err(|e| e.to_string())?;
    let mut command = Command::new("/proc/self/exe");
    if !step.background() {
        command.env(HOLD_ENV, "1");
    }
    let mut child = command
        .arg("worker")
        .arg(json)
        .arg(worker_dir(spec, step))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the workload: {e}"))?;
    let cgroup = step.joins().unwrap_or("root").to_string();
    workers.insert(child.id().to_string(), cgroup);
    if step.background() {
        // A holder reports "ready" on stdout once its memory is in place, then waits to be
        // killed at the end of the lab. EOF instead of "ready" means it died first.
        // Its line is read on a thread, so that the timeline goes on while it fills its memory.
        let pipe = child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(mut pipe) = pipe {
                let mut byte = [0u8; 1];
                while pipe.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
                    line.push(byte[0] as char);
                }
            }
            let _ = tx.send(line);
        });
        let line = loop {
            match rx.try_recv() {
                Ok(line) => break line,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    ticker.tick(out);
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break String::new(),
            }
        };
        if line == "ready" {
            holders.push(child);
            ticker.finish(out);
            return Ok(StepOutcome {
                exit: Exit::Holding,
                ..StepOutcome::ok()
            });
        }
    }
    // Drained while it runs, so that a chatty program never blocks on a full pipe.
    let stdout = Drain::start(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = Drain::start(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let pid = child.id() as libc::pid_t;
    let kill_after = kill_fault(step.name());
    let per_result = step.result_timeout_secs().map(Duration::from_secs);
    let (mut results, mut last_result) = (0, Instant::now());
    let mut timed_out = None;
    let (mut done, mut held) = (None, None);
    let status = loop {
        let mut raw = 0;
        // SAFETY: waitpid on our own child, with a valid status pointer.
        let rc = unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG | libc::WUNTRACED) };
        if rc < 0 {
            return Err(format!("waiting for the workload: {}", errno()));
        }
        if rc == 0 {
            let n = ktap_results(&stdout.text());
            if n != results {
                (results, last_result) = (n, Instant::now());
            }
            if kill_after.is_some_and(|k| n >= k) {
                // Fault injection: the program dies midway, as if OOM-killed.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if let Some(t) = per_result
                && timed_out.is_none()
                && last_result.elapsed() > t
            {
                timed_out = Some(t);
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            ticker.tick(out);
            std::thread::sleep(Duration::from_millis(2));
        } else if libc::WIFSTOPPED(raw) {
            // Its work is done and it still holds its memory: the step's final samples now.
            done = Some(Instant::now());
            ticker.finish(out);
            held = Some(sample(spec, probe));
            // SAFETY: signalling our own stopped child.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        } else {
            break std::process::ExitStatus::from_raw(raw);
        }
    };
    if done.is_none() {
        ticker.finish(out); // it died, or an exec step's program ended
    }
    // Children a killed program left behind may hold its pipes open: wait for them a little,
    // then take what arrived.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !(stdout.finished() && stderr.finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut err = stderr.text();
    if let Some(t) = timed_out {
        err.push_str(&format!(
            "{TIMEOUT_NOTE} {}s after {results} results: killed\n",
            t.as_secs()
        ));
    }
    Ok(StepOutcome {
        exit: exit_of(status)?,
        stderr: err,
        stdout: stdout.text(),
        done: done.unwrap_or_else(Instant::now),
        held,
    })
}

/// Starts the line the agent adds to an exec step's stderr when it killed the program for its
/// per-result timeout (the host reads it back).
const TIMEOUT_NOTE: &str = guest::event::RESULT_TIMEOUT_NOTE;

/// A pipe read to its end on a thread; what arrived so far can be taken at any time.
struct Drain {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drain {
    fn start(pipe: Option<Box<dyn Read + Send>>) -> Drain {
        let d = Drain {
            text: Default::default(),
            done: Default::default(),
        };
        let (text, done) = (d.text.clone(), d.done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            if let Some(mut pipe) = pipe {
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut t) = text.lock() {
                        t.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        d
    }

    fn text(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn finished(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// KTAP result lines (`ok N ...`, `not ok N ...`) in a program's output so far.
fn ktap_results(stdout: &str) -> usize {
    stdout
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "))
        .count()
}

/// Fault injection for kernel-lab's own tests, from the kernel command line
/// (`kernel_lab_fault=a,b`): `warn` writes a WARNING line at level 4 to the kernel log, `taint`
/// sets the kernel's W taint flag, `kill:STEP:N` kills STEP's program after N test results.
fn faults() -> Vec<String> {
    std::env::var("kernel_lab_fault")
        .unwrap_or_default()
        .split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect()
}

fn kill_fault(step: &str) -> Option<usize> {
    faults().iter().find_map(|f| {
        let rest = f.strip_prefix("kill:")?;
        let (s, n) = rest.rsplit_once(':')?;
        (s == step).then(|| n.parse().ok()).flatten()
    })
}

fn inject_kernel_faults() {
    for f in faults() {
        let done = match f.as_str() {
            "warn" => write(
                "/dev/kmsg",
                "<4>WARNING: CPU: 0 PID: 1 at kernel-lab injected warning (kernel_lab_fault=warn)\n",
            ),
            // The W flag (bit 9): what a WARN_ON() leaves behind.
            "taint" => write("/proc/sys/kernel/tainted", "512"),
            _ => Ok(()),
        };
        if let Err(e) = done {
            eprintln!("agent: fault {f}: {e}");
        }
    }
}

/// The kernel's own state, read last: its taint flags and the kernel log's records at warning
/// level or more severe.
fn kernel_health() -> Event {
    let tainted = read("/proc/sys/kernel/tainted").and_then(|t| t.trim().parse().ok());
    let (mut log, mut dropped) = (Vec::new(), 0u64);
    if let Ok(mut kmsg) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    {
        let mut buf = vec![0u8; 8192];
        loop {
            match kmsg.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let Some(r) = KmsgRecord::parse(&String::from_utf8_lossy(&buf[..n])) else {
                        continue;
                    };
                    if r.level > 4 {
                        continue;
                    }
                    if log.len() < HEALTH_LOG_CAP {
                        log.push(r);
                    } else {
                        dropped += 1;
                    }
                }
                // EPIPE: records were overwritten before we read them; reading goes on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => dropped += 1,
                Err(_) => break,
            }
        }
    }
    Event::Health {
        tainted,
        log,
        dropped,
    }
}

/// How a workload process ended.
fn exit_of(status: std::process::ExitStatus) -> Result<Exit> {
    match (status.code(), status.signal()) {
        (Some(code), _) => Ok(Exit::Exited { code }),
        (None, Some(signal)) => Ok(Exit::Signaled { signal }),
        (None, None) => Err(format!("workload ended strangely: {status:?}")),
    }
}

/// The timeline of one step: samples a few counters every `tick_ms` at first, then less often
/// as the step goes on (about 64 per doubling of its time: a 0.4 s step and a 20 s one both
/// show their shape), spending about a fifth of the time at most, and sends them in batches of
/// rows ([`Event::Ticks`]) at least every second, so a hung step still shows how far it got.
struct Ticker<'a> {
    spec: &'a LabSpec,
    step: &'a str,
    every: Option<Duration>,
    started: Instant,
    next: Instant,
    keys: Vec<String>,
    rows: Vec<(u64, Vec<u64>)>,
    sent: Instant,
    /// Time spent sampling and sending since the last batch.
    cost: Duration,
    /// A moving average of what one sample costs.
    cost_avg: Duration,
}

impl<'a> Ticker<'a> {
    fn new(spec: &'a LabSpec, step: &'a Step) -> Self {
        let every = (spec.vm.tick_ms > 0).then(|| Duration::from_millis(spec.vm.tick_ms));
        Ticker {
            spec,
            step: step.name(),
            every,
            started: Instant::now(),
            next: Instant::now(),
            keys: Vec::new(),
            rows: Vec::new(),
            sent: Instant::now(),
            cost: Duration::ZERO,
            cost_avg: Duration::ZERO,
        }
    }

    /// Samples when the next sample is due.
    fn tick(&mut self, out: &mut Emitter) {
        let Some(every) = self.every else { return };
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.sample(out);
        // About a fifth of the agent's time at most goes to sampling (four times the recent
        // cost of a sample between two), however slow the machine; but never fewer than eight
        // samples per doubling of the step's time, so a stall of the host cannot leave a hole.
        let cost = now.elapsed();
        self.cost_avg = (self.cost_avg * 2 + cost) / 3;
        let elapsed = self.started.elapsed();
        let lo = every.max(elapsed / 64);
        let hi = lo.max(elapsed / 8);
        self.next = now + (self.cost_avg * 4).clamp(lo, hi);
    }

    /// The step's final sample, and everything not sent yet.
    fn finish(&mut self, out: &mut Emitter) {
        if self.every.is_some() {
            self.sample(out);
            self.flush(out);
        }
    }

    fn sample(&mut self, out: &mut Emitter) {
        let t0 = Instant::now();
        let values = timeline_values(self.spec);
        if !self.keys.iter().eq(values.keys()) {
            self.flush(out);
            self.keys = values.keys().cloned().collect();
        }
        self.rows
            .push((uptime_ms(), values.into_values().collect()));
        self.cost += t0.elapsed();
        if self.rows.len() >= 64 || self.sent.elapsed() >= Duration::from_secs(1) {
            self.flush(out);
        }
    }

    fn flush(&mut self, out: &mut Emitter) {
        if self.rows.is_empty() {
            return;
        }
        let t0 = Instant::now();
        out.send(Event::Ticks {
            step: self.step.into(),
            keys: self.keys.clone(),
            rows: std::mem::take(&mut self.rows),
            cost_us: self.cost.as_micros() as u64,
        });
        self.sent = Instant::now();
        self.cost = t0.elapsed();
    }
}

/// The counters of the timeline: free memory (per node too), reclaim and swap activity, dirty
/// pages, PSI, and each group's usage, reclaim, events and stall time.
fn timeline_values(spec: &LabSpec) -> BTreeMap<String, u64> {
    const VMSTAT: &[&str] = &[
        "pgscan_kswapd",
        "pgscan_direct",
        "pgsteal_kswapd",
        "pgsteal_direct",
        "pswpout",
        "pswpin",
        "nr_dirty",
        "nr_writeback",
        "oom_kill",
        "workingset_refault_anon",
        "workingset_refault_file",
    ];
    const MEMINFO: &[&str] = &["MemFree", "SwapFree"];
    const STAT: &[&str] = &[
        "pgscan_direct",
        "pgscan_kswapd",
        "anon",
        "file",
        "shmem",
        "file_dirty",
        // A cgroup v1 group's anonymous memory, page cache and swap.
        "rss",
        "cache",
        "swap",
    ];
    const EVENTS: &[&str] = &["high", "max", "oom_kill"];
    let mut v = BTreeMap::new();
    let pick = |v: &mut BTreeMap<String, u64>,
                prefix: &str,
                keys: &[&str],
                pairs: Option<Vec<(String, u64)>>| {
        for (k, n) in pairs.into_iter().flatten() {
            if keys.contains(&k.as_str()) {
                v.insert(format!("{prefix}{k}"), n);
            }
        }
    };
    let kv = |path: &str| read(path).and_then(|t| parse_key_values(&t).ok());
    let psi = |path: &str| read(path).and_then(|t| parse_psi(&t).ok());
    pick(&mut v, "vmstat.", VMSTAT, kv("/proc/vmstat"));
    pick(
        &mut v,
        "meminfo.",
        MEMINFO,
        read("/proc/meminfo").and_then(|t| parse_meminfo(&t).ok()),
    );
    pick(
        &mut v,
        "pressure.",
        &["some.total"],
        psi("/proc/pressure/memory"),
    );
    if spec.vm.numa_nodes > 1 {
        for node in 0..spec.vm.numa_nodes {
            // `Node 1 MemFree:   12345 kB`
            let text = read(&format!("/sys/devices/system/node/node{node}/meminfo")).map(|t| {
                t.lines()
                    .filter_map(|l| l.splitn(3, ' ').nth(2))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            pick(
                &mut v,
                &format!("node{node}.meminfo."),
                &["MemFree"],
                text.and_then(|t| parse_meminfo(&t).ok()),
            );
        }
    }
    if spec.refers_to("kswapd.") {
        for (k, n) in kswapd_threads() {
            v.insert(format!("kswapd.{k}"), n);
        }
    }
    for cg in &spec.cgroups {
        let (name, dir) = (&cg.name, cgroup_dir(spec, &cg.name));
        let files: &[&str] = match cg.v1 {
            None => &["memory.current", "memory.swap.current"],
            Some(_) => &["memory.usage_in_bytes"],
        };
        for file in files {
            if let Some(n) = read(&format!("{dir}/{file}")).and_then(|t| parse_single(&t).ok()) {
                v.insert(format!("{name}/{file}"), n);
            }
        }
        pick(
            &mut v,
            &format!("{name}/memory.stat."),
            STAT,
            kv(&format!("{dir}/memory.stat")),
        );
        pick(
            &mut v,
            &format!("{name}/memory.events."),
            EVENTS,
            kv(&format!("{dir}/memory.events")),
        );
        pick(
            &mut v,
            &format!("{name}/memory.pressure."),
            &["some.total"],
            psi(&format!("{dir}/memory.pressure")),
        );
    }
    v
}

/// `--shell`: an interactive busybox shell on the console, the lab set up but no step run.
fn shell(spec: &LabSpec) -> Result<()> {
    let steps: Vec<&str> = spec.steps.iter().map(|s| s.name()).collect();
    let groups: Vec<String> = spec
        .cgroups
        .iter()
        .map(|c| cgroup_dir(spec, &c.name))
        .collect();
    println!(
        "\nkernel-lab shell: lab {} is set up; no step has run.",
        spec.id
    );
    println!(
        "  cgroups: {}",
        if groups.is_empty() {
            "(none)".into()
        } else {
            groups.join(" ")
        }
    );
    println!(
        "  run a step:   lab-step NAME   (steps: {})",
        steps.join(", ")
    );
    println!(
        "  look around:  cat /proc/vmstat, cat {}/memory.stat, free",
        groups.first().map(String::as_str).unwrap_or(CGROOT)
    );
    println!("  exit (or Ctrl-D) powers the VM off.\n");
    let status = Command::new("/bin/sh")
        .env_clear()
        .env("PATH", "/bin")
        .env("HOME", "/")
        .env("PS1", format!("[{}] # ", spec.id))
        .status()
        .map_err(|e| format!("starting /bin/sh: {e}"))?;
    println!("kernel-lab shell: {status}; powering off");
    Ok(())
}

/// Runs one step of the plan in the foreground and prints what it changed.
fn lab_step(name: &str) -> Result<()> {
    let plan = fs::read_to_string(PLAN).map_err(|e| format!("reading {PLAN}: {e}"))?;
    let spec: LabSpec = serde_json::from_str(&plan).map_err(|e| format!("parsing {PLAN}: {e}"))?;
    let Some(step) = spec.steps.iter().find(|s| s.name() == name) else {
        let names: Vec<&str> = spec.steps.iter().map(|s| s.name()).collect();
        return Err(format!("no step {name:?} (steps: {})", names.join(", ")));
    };
    let before = sample(&spec, &BTreeMap::new());
    let json = serde_json::to_string(step).map_err(|e| e.to_string())?;
    let status = Command::new("/proc/self/exe")
        .arg("worker")
        .arg(json)
        .arg(worker_dir(&spec, step))
        .status()
        .map_err(|e| format!("starting the workload: {e}"))?;
    let after = sample(&spec, &BTreeMap::new());
    let exit = exit_of(status)?;
    println!("step {name}: {exit}");
    let interesting = |k: &str| {
        k.contains("pgscan")
            || k.contains("pgsteal")
            || k.contains("oom")
            || k.ends_with(".max")
            || k.ends_with(".high")
            || k.contains("pswp")
            || k.ends_with("memory.current")
    };
    for (k, a) in &after {
        let b = before.get(k).copied().unwrap_or(0);
        if *a != b && interesting(k) && !k.starts_with("zoneinfo") {
            println!("  {k}: {b} -> {a} ({:+})", i128::from(*a) - i128::from(b));
        }
    }
    Ok(())
}

/// The cgroup directory a step's worker joins ("" for none: the root, or a reclaim step).
fn worker_dir(spec: &LabSpec, step: &Step) -> String {
    step.joins()
        .map(|cg| cgroup_dir(spec, cg))
        .unwrap_or_default()
}

/// The workload process: leaves the agent's OOM protection, joins its cgroup (`dir`, empty for
/// none), does the work.
fn worker(json: &str, dir: &str) -> Result<()> {
    let step: Step = serde_json::from_str(json).map_err(|e| format!("bad step: {e}"))?;
    write("/proc/self/oom_score_adj", "0")?;
    if !dir.is_empty() {
        write(&format!("{dir}/cgroup.procs"), "0")?;
    }
    if let Some(node) = step.workload().and_then(|w| w.numa_node) {
        let mask: libc::c_ulong = 1 << node;
        const MPOL_BIND: libc::c_long = 2;
        let rc = unsafe { libc::syscall(libc::SYS_set_mempolicy, MPOL_BIND, &mask, 64) };
        if rc != 0 {
            return Err(format!("binding memory to node {node}: {}", errno()));
        }
    }
    // Named after its step (the kernel keeps 15 bytes): OOM reports and traces say which.
    if let Ok(name) = CString::new(step.name()) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    }
    let size = step.size().map(|s| s.0).unwrap_or(0) as usize;
    work(&step, size)?;
    if std::env::var_os(HOLD_ENV).is_some() {
        // Done: wait, still holding the memory, until the agent has sampled the counters.
        // SAFETY: stopping ourselves; the agent sends SIGCONT.
        unsafe { libc::raise(libc::SIGSTOP) };
    }
    if step.background() {
        println!("ready");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    Ok(())
}

fn work(step: &Step, size: usize) -> Result<()> {
    match &step.kind {
        StepKind::Anon {
            ms,
            pageout,
            compressible,
            ..
        } => {
            touch_anon(size, *pageout, *compressible)?;
            std::thread::sleep(Duration::from_millis(ms.unwrap_or(0)));
            Ok(())
        }
        StepKind::ReadFile { file, .. } => read_file(&format!("{DATA}/{file}"), size),
        StepKind::WriteFile { file, .. } => write_file(&format!("{DATA}/{file}"), size),
        StepKind::TmpfsFill { file, .. } => write_file(&format!("{TMPFS}/{file}"), size),
        StepKind::Reclaim {
            cgroup, swappiness, ..
        } => {
            let mut arg = size.to_string();
            if let Some(sw) = swappiness {
                arg.push_str(&format!(" swappiness={sw}"));
            }
            write(&format!("{CGROOT}/{cgroup}/memory.reclaim"), &arg)
        }
        StepKind::Exec { argv, .. } => {
            use std::os::unix::process::CommandExt;
            // Replaces the worker, keeping its cgroup, oom_score_adj and stdout/stderr pipes.
            let err = Command::new(&argv[0])
                .args(&argv[1..])
                .current_dir(DATA)
                .exec();
            Err(format!("running {}: {err}", argv[0]))
        }
        StepKind::Sleep { .. } | StepKind::Sysctl { .. } => Ok(()),
    }
}

/// Mounts the memory controller as a cgroup v1 hierarchy (before cgroup v2 takes it).
fn cgroup_v1_mount() -> Result<()> {
    let _ = fs::create_dir_all(V1ROOT);
    mount_with("cgroup", V1ROOT, "cgroup", 0, Some("memory")).map_err(|e| {
        format!("the cgroup v1 memory controller: {e} (the kernel needs CONFIG_MEMCG_V1)")
    })
}

/// Unmounts the v1 hierarchy (with no groups left, its root is destroyed and the controller
/// can move to cgroup v2).
fn cgroup_v1_unmount() -> Result<()> {
    let root = CString::new(V1ROOT).unwrap();
    if unsafe { libc::umount(root.as_ptr()) } != 0 {
        return Err(format!("unmounting the v1 hierarchy: {}", errno()));
    }
    Ok(())
}

/// Reads the v1 root group's files: `v1.memory.swappiness`, `v1.memory.stat.<key>` ...
fn cgroup_v1_probe() -> BTreeMap<String, u64> {
    // The root's: a child group would outlive the umount as a dying memcg (while anything is
    // charged to it) and keep the hierarchy, and so the controller, from returning to v2.
    let group = V1ROOT;
    let mut v = BTreeMap::new();
    let files = read(&format!("{group}/memory.stat")).and_then(|t| parse_key_values(&t).ok());
    for (k, n) in files.into_iter().flatten() {
        v.insert(format!("v1.memory.stat.{k}"), n);
    }
    for file in [
        "memory.swappiness",
        "memory.limit_in_bytes",
        "memory.usage_in_bytes",
    ] {
        if let Some(n) = read(&format!("{group}/{file}")).and_then(|t| parse_single(&t).ok()) {
            v.insert(format!("v1.{file}"), n);
        }
    }
    v
}

/// Maps `size` bytes of private anonymous memory and fills every page with pseudo-random words,
/// so that neither the zero page nor zram's same-filled pages can stand in for it. With
/// `compressible`, only the first quarter of each page (the rest stays zero): about 4:1 under lz4.
fn touch_anon(size: usize, pageout: bool, compressible: bool) -> Result<()> {
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(format!("mmap {size} bytes: {}", errno()));
    }
    let words = unsafe { std::slice::from_raw_parts_mut(ptr as *mut u64, size / 8) };
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let per_page = if compressible { 128 } else { 512 };
    for page in words.chunks_mut(512) {
        for w in page.iter_mut().take(per_page) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *w = x;
        }
    }
    if pageout && unsafe { libc::madvise(ptr, size, libc::MADV_PAGEOUT) } != 0 {
        return Err(format!("madvise(MADV_PAGEOUT): {}", errno()));
    }
    Ok(())
}

/// Writes `size` bytes of non-zero data with plain write(2): the pages stay dirty in the page
/// cache until writeback (or reclaim) writes them.
fn write_file(path: &str, size: usize) -> Result<()> {
    let mut f = File::create(path).map_err(|e| format!("creating {path}: {e}"))?;
    let mut buf = vec![0x5au8; 1 << 20];
    let mut done = 0;
    while done < size {
        let n = buf.len().min(size - done);
        buf[..8].copy_from_slice(&(done as u64).to_le_bytes());
        f.write_all(&buf[..n])
            .map_err(|e| format!("writing {path} at {done}: {e}"))?;
        done += n;
    }
    Ok(())
}

fn read_file(path: &str, size: usize) -> Result<()> {
    let mut f = File::open(path).map_err(|e| format!("opening {path}: {e}"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < size {
        let want = buf.len().min(size - done);
        let n = f
            .read(&mut buf[..want])
            .map_err(|e| format!("reading {path}: {e}"))?;
        if n == 0 {
            return Err(format!("{path} ended after {done} of {size} bytes"));
        }
        done += n;
    }
    Ok(())
}

/// Reads every counter the lab can refer to, family by family ([`guest::counters`]). A file
/// that cannot be read is simply absent from the sample, so an expectation on it is reported as
/// "not reported by this kernel".
fn sample(spec: &LabSpec, probe: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    fn add(v: &mut BTreeMap<String, u64>, prefix: &str, pairs: Option<Vec<(String, u64)>>) {
        for (k, n) in pairs.into_iter().flatten() {
            v.insert(format!("{prefix}{k}"), n);
        }
    }
    let mut v = probe.clone();
    // The costlier families only when the lab refers to them (small frames, quick samples).
    let wanted = |f: &&Family| !f.on_demand || spec.refers_to(f.prefix);
    let global = FAMILIES.iter().filter(|f| f.scope == Scope::Global);
    for f in global.filter(wanted) {
        add(&mut v, f.prefix, read_family(f, ""));
    }
    for cg in &spec.cgroups {
        let dir = format!("{}/", cgroup_dir(spec, &cg.name));
        for f in FAMILIES.iter().filter(|f| f.scope == Scope::Cgroup) {
            let prefix = format!("{}/{}", cg.name, f.prefix);
            add(&mut v, &prefix, read_family(f, &dir));
        }
    }
    v
}

/// One family's pairs as the kernel reports them now (`dir`: a cgroup's directory); None when
/// it cannot be read, or is not sampled.
fn read_family(f: &Family, dir: &str) -> Option<Vec<(String, u64)>> {
    match f.source {
        Source::File(path, parser) => {
            read(&format!("{dir}{path}")).and_then(|t| parser.parse(&t).ok())
        }
        Source::KswapdThreads => Some(kswapd_threads()),
        Source::V1Probe | Source::Trace => None,
    }
}

/// `<N>.cpu_ticks` (user + system, in clock ticks) for each kswapdN thread, and `threads`.
fn kswapd_threads() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let Some(comm) = read(&format!("{}/comm", dir.display())) else {
            continue;
        };
        let Some(node) = comm.trim().strip_prefix("kswapd") else {
            continue;
        };
        let Some(stat) = read(&format!("{}/stat", dir.display())) else {
            continue;
        };
        let ticks = parse_cpu_ticks(&stat).unwrap_or(0);
        out.push((format!("{node}.cpu_ticks"), ticks));
    }
    out.push(("threads".into(), out.len() as u64));
    out
}

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn write(path: &str, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| format!("writing {value:?} to {path}: {e}"))
}

fn mount(src: &str, dst: &str, fstype: &str, flags: libc::c_ulong) -> Result<()> {
    mount_with(src, dst, fstype, flags, None)
}

/// mount(2) with an option string (e.g. the controller of a cgroup v1 hierarchy).
fn mount_with(
    src: &str,
    dst: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let (s, d, t) = (
        CString::new(src).unwrap(),
        CString::new(dst).unwrap(),
        CString::new(fstype).unwrap(),
    );
    let data = data.map(|o| CString::new(o).unwrap());
    let data_ptr = data
        .as_ref()
        .map_or(std::ptr::null(), |o| o.as_ptr().cast());
    let rc = unsafe { libc::mount(s.as_ptr(), d.as_ptr(), t.as_ptr(), flags, data_ptr) };
    if rc != 0 {
        return Err(format!("mounting {fstype} on {dst}: {}", errno()));
    }
    Ok(())
}

fn set_raw(port: &File) {
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(port.as_raw_fd(), &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(port.as_raw_fd(), libc::TCSANOW, &t);
        }
    }
}

fn uptime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn kernel_release() -> String {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    unsafe { libc::uname(&mut u) };
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Syncs and restarts; the kernel runs with `reboot=t` and QEMU with `-no-reboot`, so a restart
/// ends QEMU. If even that fails, returning from main panics the kernel, which also ends QEMU.
fn power_off() {
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
}
