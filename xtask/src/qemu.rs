//! QEMU: the argv (a pure function), accelerator choice, and running it with a timeout.
//!
//! The guest is a `microvm` (no PCI, no ACPI, no firmware tables to parse) booting vmlinux through
//! its PVH entry, with the console on ttyS0 and the result stream on ttyS1, both to files. No
//! network, and the data disk is attached with snapshot=on so runs never modify it.

use crate::process::{Cmd, Ended};
use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

pub const QEMU: &str = "qemu-system-x86_64";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM when /dev/kvm opens and the CPU has vmx/svm, TCG otherwise.
    Auto,
    Kvm,
    Tcg,
}

/// What one VM gets.
#[derive(Debug, Clone)]
pub struct VmArgs<'a> {
    pub accel: Accel,
    pub memory: u64,
    pub cpus: u32,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub data_disk: Option<&'a Path>,
    /// A swap disk (`[vm] swap = { kind = "disk" }`): a scratch file, written by the guest.
    pub swap_disk: Option<&'a Path>,
    pub console_log: &'a Path,
    pub results: &'a Path,
    /// The host TSC in kHz: TCG guests on microvm hang in TSC calibration without it.
    pub tsc_khz: Option<u64>,
    /// The guest kernel's CONFIG_HZ: with `tsc_khz` it gives `lpj=` (TSC cycles per jiffy), so
    /// the second CPU skips its delay-loop calibration (about 0.1 s under TCG).
    pub hz: Option<u64>,
    /// Appended to the kernel command line (unknown `key=value` words reach /init's environment).
    pub extra_cmdline: Vec<String>,
    /// NUMA nodes, faked by the kernel (`numa=fake=N`): microvm has no ACPI SRAT to describe them.
    pub numa_nodes: u32,
    /// The console on QEMU's stdin/stdout (`--shell`) instead of `console_log`.
    pub console_stdio: bool,
}

/// The kernel command line.
pub fn cmdline(a: &VmArgs) -> String {
    let mut parts = vec![
        "console=ttyS0".to_string(),
        "quiet".into(),
        "panic=-1".into(),
        "reboot=t".into(),
        "rdinit=/init".into(),
        "8250.nr_uarts=2".into(),
    ];
    if let Some(khz) = a.tsc_khz {
        // TCG: give the TSC rate (calibration without HPET/PIT hangs about one boot in three),
        // trust it (the clocksource watchdog otherwise flags it unstable under host load and
        // falls back to jiffies), and skip the APIC timer calibration (~0.2 s).
        parts.push(format!("tsc_early_khz={khz}"));
        parts.push("tsc=reliable".into());
        parts.push("noapictimer".into());
        if let Some(hz) = a.hz.filter(|&h| h > 0) {
            parts.push(format!("lpj={}", khz * 1000 / hz));
        }
    }
    if a.accel != Accel::Kvm {
        // TCG: skip the boot's check that the timer interrupt ticks (timer_irq_works(), a
        // 40 ms busy wait for 4 jiffies): on a loaded host QEMU's timer thread misses that
        // window, and the kernel panics "IO-APIC + timer doesn't work!" (seen here at load 15).
        // A KVM guest skips it by itself (kvm.c sets no_timer_check), as do VMware and Hyper-V.
        parts.push("no_timer_check".into());
    }
    if a.numa_nodes > 1 {
        parts.push(format!("numa=fake={}", a.numa_nodes));
    }
    parts.extend(a.extra_cmdline.iter().cloned());
    parts.join(" ")
}

/// The full argv after the program name. `accel` must be resolved (not `Auto`).
pub fn argv(a: &VmArgs) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
        for i in items {
            v.push(i.as_ref().to_owned());
        }
    };
    let (accel, cpu) = match a.accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg | Accel::Auto => ("tcg", "qemu64"),
    };
    let mem = format!("{}M", a.memory >> 20);
    let smp = a.cpus.to_string();
    let console = if a.console_stdio {
        OsString::from("stdio,id=console,signal=off")
    } else {
        path_arg("file,id=console,path=", a.console_log)
    };
    let results = path_arg("file,id=results,path=", a.results);
    let append = cmdline(a);
    push(&[
        &"-M",
        &"microvm,acpi=off",
        &"-accel",
        &accel,
        &"-cpu",
        &cpu,
        &"-m",
        &mem,
        &"-smp",
        &smp,
        &"-nodefaults",
        &"-no-user-config",
        &"-display",
        &"none",
        &"-no-reboot",
        &"-nic",
        &"none",
        &"-chardev",
        &console,
        &"-serial",
        &"chardev:console",
        &"-chardev",
        &results,
        &"-device",
        &"isa-serial,chardev=results,iobase=0x2f8,irq=3",
        &"-kernel",
        &a.kernel,
        &"-initrd",
        &a.initrd,
        &"-append",
        &append,
    ]);
    if let Some(disk) = a.data_disk {
        let drive = path_arg("if=none,id=data,format=raw,snapshot=on,file=", disk);
        let device = format!(
            "virtio-blk-device,drive=data,serial={}",
            guest::DATA_DISK_SERIAL
        );
        push(&[&"-drive", &drive, &"-device", &device]);
    }
    if let Some(disk) = a.swap_disk {
        let drive = path_arg("if=none,id=swap,format=raw,file=", disk);
        let device = format!(
            "virtio-blk-device,drive=swap,serial={}",
            guest::SWAP_DISK_SERIAL
        );
        push(&[&"-drive", &drive, &"-device", &device]);
    }
    v
}

/// `prefix` + path, with QEMU's comma escaping (a comma in a path is written twice).
fn path_arg(prefix: &str, path: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(path.to_string_lossy().replace(',', ",,"));
    s
}

/// Resolves `Auto`: KVM only if /dev/kvm opens read-write **and** the CPU advertises vmx/svm
/// (on some hosts /dev/kvm exists but guests hang). An explicit `Kvm` that cannot work is an error.
pub fn resolve_accel(requested: Accel) -> Result<Accel> {
    let usable = || {
        let opens = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let virt = flags
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        opens && virt
    };
    match requested {
        Accel::Tcg => Ok(Accel::Tcg),
        Accel::Auto => Ok(if usable() { Accel::Kvm } else { Accel::Tcg }),
        Accel::Kvm if usable() => Ok(Accel::Kvm),
        Accel::Kvm => bail!(
            "--accel kvm: /dev/kvm is not usable here (it must open read-write and the CPU must have vmx or svm); use --accel tcg"
        ),
    }
}

/// The TSC rate to give the guest: the host's under TCG (see [`VmArgs::tsc_khz`]), none under
/// KVM, where the guest reads it from kvm-clock (base.config's `KVM_GUEST`: `kvmclock_init()`
/// sets the TSC calibration to the rate the host publishes and presets `lpj`). The host's
/// "cpu MHz" is not the TSC rate on a laptop that scales its frequency, so under KVM it would
/// be the wrong number to give.
pub fn tsc_khz_for(accel: Accel) -> Option<u64> {
    if accel == Accel::Kvm {
        None
    } else {
        host_tsc_khz()
    }
}

/// The host TSC frequency in kHz, from /proc/cpuinfo.
pub fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

/// How a QEMU run ended.
#[derive(Debug)]
pub struct Outcome {
    pub wall: Duration,
    /// `None` when it was killed at the timeout.
    pub status: Option<std::process::ExitStatus>,
}

/// Runs QEMU until it exits or `timeout` passes (then it is stopped and reaped). `on_tick` is
/// called about every 20 ms while it runs (progress). Ctrl-C stops it and returns an error.
/// With a `console` gate (`--shell`), our stdin reaches the guest once the gate opens.
pub fn run(
    argv: &[OsString],
    scratch: &Path,
    timeout: Duration,
    console: Option<&crate::console::Gate>,
    on_tick: impl FnMut(),
) -> Result<Outcome> {
    let what =
        format!("{QEMU} (install it: apt-get install --no-install-recommends qemu-system-x86)");
    let mut cmd = Cmd::new(QEMU, &what).args(argv).env("TMPDIR", scratch); // snapshot=on overlays go here, removed with the run
    let _raw = match console {
        None => None,
        Some(gate) => {
            let (from_relay, to_qemu) = std::io::pipe().context("creating the console pipe")?;
            cmd = cmd.interactive().stdin_pipe(from_relay);
            crate::console::relay(to_qemu, gate.clone());
            Some(crate::console::RawMode::enter())
        }
    };
    let running = cmd.start()?;
    let f = running.wait(Duration::from_millis(20), Some(timeout), on_tick)?;
    let status = match f.ended {
        Ended::Interrupted => bail!("interrupted: qemu was stopped"),
        Ended::TimedOut => None,
        Ended::Exited(s) => Some(s),
    };
    let stderr = String::from_utf8_lossy(&f.stderr);
    if let Some(s) = status.filter(|s| !s.success())
        && !stderr.trim().is_empty()
    {
        bail!("qemu failed ({s}): {}", stderr.trim());
    }
    Ok(Outcome {
        wall: f.wall,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args<'a>(disk: Option<&'a Path>) -> VmArgs<'a> {
        VmArgs {
            accel: Accel::Tcg,
            memory: 256 << 20,
            cpus: 2,
            kernel: Path::new("/c/vmlinux"),
            initrd: Path::new("/r/initramfs.cpio"),
            data_disk: disk,
            swap_disk: None,
            console_log: Path::new("/r/console,1.log"),
            results: Path::new("/r/results.jsonl"),
            tsc_khz: Some(2445406),
            hz: Some(250),
            extra_cmdline: vec![],
            numa_nodes: 1,
            console_stdio: false,
        }
    }

    fn joined(a: &VmArgs) -> String {
        argv(a)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn argv_pins_memory_cpus_and_ports() {
        let s = joined(&args(None));
        assert!(
            s.starts_with("-M microvm,acpi=off -accel tcg -cpu qemu64 -m 256M -smp 2 "),
            "{s}"
        );
        assert!(
            s.contains("-chardev file,id=console,path=/r/console,,1.log -serial chardev:console"),
            "{s}"
        );
        assert!(
            s.contains("isa-serial,chardev=results,iobase=0x2f8,irq=3"),
            "{s}"
        );
        assert!(s.contains("-nic none") && s.contains("-no-reboot"), "{s}");
        assert!(!s.contains("-drive"), "{s}");
        // Least privilege: no network device and no host directory shared with the guest.
        for forbidden in [
            "-netdev",
            "virtio-net",
            "-virtfs",
            "-fsdev",
            "9p",
            "vhost-user",
        ] {
            assert!(!s.contains(forbidden), "{forbidden} in {s}");
        }
    }

    #[test]
    fn argv_attaches_the_disk_read_only_in_effect() {
        let s = joined(&args(Some(Path::new("/c/data.img"))));
        assert!(s.contains("-drive if=none,id=data,format=raw,snapshot=on,file=/c/data.img -device virtio-blk-device,drive=data,serial=kernel-lab-data"), "{s}");
    }

    #[test]
    fn argv_attaches_a_writable_swap_disk_by_serial() {
        let mut a = args(Some(Path::new("/c/data.img")));
        a.swap_disk = Some(Path::new("/r/swap.img"));
        let s = joined(&a);
        assert!(s.contains("-drive if=none,id=swap,format=raw,file=/r/swap.img -device virtio-blk-device,drive=swap,serial=kernel-lab-swap"), "{s}");
    }

    #[test]
    fn cmdline_powers_off_on_panic_and_sets_tsc() {
        let mut a = args(None);
        let c = cmdline(&a);
        assert!(
            c.contains("panic=-1") && c.contains("reboot=t") && c.contains("tsc_early_khz=2445406"),
            "{c}"
        );
        // A loaded host must not fail the boot's timer check (kvm.c skips it under KVM).
        assert!(c.contains("no_timer_check"), "{c}");
        // Cycles per jiffy at HZ=250: the second CPU need not calibrate its delay loop.
        assert!(c.contains("lpj=9781624"), "{c}");
        a.hz = None;
        assert!(!cmdline(&a).contains("lpj="));
        a.tsc_khz = None;
        a.hz = Some(250);
        assert!(!cmdline(&a).contains("tsc_early_khz"));
        assert!(!cmdline(&a).contains("lpj="), "no TSC rate, no lpj");
    }

    #[test]
    fn the_shell_puts_the_console_on_stdio() {
        let mut a = args(None);
        a.console_stdio = true;
        let s = joined(&a);
        assert!(
            s.contains("-chardev stdio,id=console,signal=off -serial chardev:console"),
            "{s}"
        );
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let mut a = args(None);
        a.accel = Accel::Kvm;
        assert!(joined(&a).contains("-accel kvm -cpu host"));
    }

    /// Under KVM the command line gives no TSC rate and no `lpj=`: every kernel kernel-lab boots
    /// has kvm-clock (base.config, checked to survive olddefconfig), which gives both. The
    /// argv and the fragment are one decision.
    #[test]
    fn under_kvm_the_clock_comes_from_kvm_clock_in_every_kernel() {
        let mut a = args(None);
        a.accel = Accel::Kvm;
        a.tsc_khz = tsc_khz_for(Accel::Kvm);
        let c = cmdline(&a);
        for word in [
            "tsc_early_khz",
            "lpj=",
            "tsc=reliable",
            "noapictimer",
            "no_timer_check",
        ] {
            assert!(!c.contains(word), "{word} under KVM: {c}");
        }
        let base = crate::kernel::fragments(&[]).unwrap();
        for version in ["6.12.0", "6.1.158"] {
            let wanted: Vec<crate::kernel::Requested> = base
                .iter()
                .flat_map(|f| crate::kernel::requested_options(&f.text, Some(version)))
                .collect();
            for opt in ["CONFIG_KVM_GUEST", "CONFIG_PARAVIRT"] {
                assert!(
                    wanted
                        .iter()
                        .any(|r| r.name == opt && r.value.as_deref() == Some("y") && !r.choice),
                    "base.config must ask for {opt}=y on {version} (not as a build choice)"
                );
            }
        }
    }
}
