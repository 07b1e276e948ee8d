//! Pure parsers for the kernel's text interfaces and for human sizes ("64M").
//!
//! Every parser returns an error naming the line it could not read instead of guessing: a counter
//! that is missing must never be read as 0.

use std::fmt;

/// A parse failure: what was expected and the 1-based line it was not found on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// Parses `key value` lines: /proc/vmstat, memory.stat, memory.events, memory.swap.events.
pub fn parse_key_values(text: &str) -> Result<Vec<(String, u64)>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_ascii_whitespace();
        let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err(i + 1, format!("expected `key value`, found {line:?}")));
        };
        let value = value.parse::<u64>().map_err(|_| {
            err(
                i + 1,
                format!("value of {key:?} is not a number: {value:?}"),
            )
        })?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// Parses a PSI file (/proc/pressure/memory, memory.pressure) into `some.total`, `full.total`
/// (microseconds stalled) and `some.avg10` ... (hundredths of a percent).
pub fn parse_psi(text: &str) -> Result<Vec<(String, u64)>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut parts = line.split_ascii_whitespace();
        let Some(kind) = parts.next() else { continue };
        if kind != "some" && kind != "full" {
            return Err(err(
                i + 1,
                format!("expected `some` or `full`, found {kind:?}"),
            ));
        }
        for field in parts {
            let Some((name, value)) = field.split_once('=') else {
                return Err(err(i + 1, format!("expected name=value, found {field:?}")));
            };
            let parsed = if name == "total" {
                value.parse::<u64>().ok()
            } else {
                parse_hundredths(value)
            };
            let Some(parsed) = parsed else {
                return Err(err(
                    i + 1,
                    format!("{kind} {name} is not a number: {value:?}"),
                ));
            };
            out.push((format!("{kind}.{name}"), parsed));
        }
    }
    Ok(out)
}

/// "12.34" -> 1234.
fn parse_hundredths(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{frac:0<2}");
    Some(int.parse::<u64>().ok()? * 100 + frac.get(..2)?.parse::<u64>().ok()?)
}

/// Parses /proc/meminfo into bytes (`MemFree:  1234 kB` -> ("MemFree", 1263616)).
pub fn parse_meminfo(text: &str) -> Result<Vec<(String, u64)>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, rest)) = line.split_once(':') else {
            return Err(err(i + 1, format!("expected `Key: value`, found {line:?}")));
        };
        let mut parts = rest.split_ascii_whitespace();
        let number = parts.next().and_then(|n| n.parse::<u64>().ok());
        let Some(number) = number else {
            return Err(err(i + 1, format!("value of {key:?} is not a number")));
        };
        let scale = match parts.next() {
            None => 1,
            Some("kB") => 1024,
            Some(unit) => return Err(err(i + 1, format!("unknown unit {unit:?} for {key:?}"))),
        };
        out.push((key.to_string(), number * scale));
    }
    Ok(out)
}

/// Parses /proc/zoneinfo into `<node>.<zone>.<field>` for the watermark fields
/// (free, boost, min, low, high, spanned, present, managed), in pages.
pub fn parse_zoneinfo(text: &str) -> Result<Vec<(String, u64)>, ParseError> {
    const FIELDS: &[&str] = &[
        "free", "boost", "min", "low", "high", "spanned", "present", "managed",
    ];
    let mut out = Vec::new();
    let mut zone: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("Node ") {
            let Some((node, z)) = rest.split_once(", zone") else {
                return Err(err(
                    i + 1,
                    format!("expected `Node N, zone NAME`, found {line:?}"),
                ));
            };
            zone = Some(format!("{}.{}", node.trim(), z.trim()));
            continue;
        }
        let Some(zone) = &zone else { continue };
        let words: Vec<&str> = line.split_whitespace().collect();
        let (name, value) = match words.as_slice() {
            ["pages", "free", v] => ("free", *v),
            [name, v] if FIELDS.contains(name) => (*name, *v),
            _ => continue,
        };
        let v = value
            .parse::<u64>()
            .map_err(|_| err(i + 1, format!("{name} is not a number: {value:?}")))?;
        out.push((format!("{zone}.{name}"), v));
    }
    Ok(out)
}

/// Parses a one-number cgroup file (memory.current, memory.peak); `max` is `u64::MAX`.
pub fn parse_single(text: &str) -> Result<u64, ParseError> {
    let t = text.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse::<u64>()
        .map_err(|_| err(1, format!("expected a number, found {t:?}")))
}

/// The CPU time of a task, user + system in clock ticks, from its /proc/<pid>/stat: the
/// fields after the `)` that closes the command name (which may hold spaces and parentheses)
/// are state (field 3) ... utime (14), stime (15).
pub fn parse_cpu_ticks(stat: &str) -> Result<u64, ParseError> {
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| err(1, "no `)` after the command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| err(1, format!("field {i} is not a number")))
    };
    Ok(field(14)? + field(15)?)
}

/// A node's meminfo (/sys/devices/system/node/nodeN/meminfo: `Node 1 MemFree:   12345 kB`)
/// as /proc/meminfo's pairs: each line without its `Node N ` prefix.
pub fn parse_node_meminfo(text: &str) -> Result<Vec<(String, u64)>, ParseError> {
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.splitn(3, ' ').nth(2))
        .collect();
    parse_meminfo(&lines.join("\n"))
}

/// The node of a kswapd thread from its /proc/<pid>/comm (`kswapd0` -> `0`); None for any
/// other task.
pub fn kswapd_node(comm: &str) -> Option<&str> {
    comm.trim().strip_prefix("kswapd")
}

/// The groups /proc/cgroups counts for `controller` (its `num_cgroups` column, the root
/// included, a group counted until it is freed); None when the controller is not listed.
pub fn parse_cgroup_count(text: &str, controller: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.split('\t').next() == Some(controller))
        .and_then(|l| l.split('\t').nth(2)?.parse::<u64>().ok())
}

/// KTAP result lines (`ok N ...`, `not ok N ...`) in a program's output so far.
pub fn count_ktap_results(stdout: &str) -> usize {
    stdout
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "))
        .count()
}

/// Parses one hexadecimal number such as `0x0007` (/sys/kernel/mm/lru_gen/enabled).
pub fn parse_hex(text: &str) -> Result<u64, ParseError> {
    let t = text.trim();
    u64::from_str_radix(t.trim_start_matches("0x"), 16)
        .map_err(|_| err(1, format!("expected a hexadecimal number, found {t:?}")))
}

/// Parses a size such as `64M`, `1G`, `512K`, `64MiB` or `4096` (binary units) into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!(
            "size {s:?} does not start with a number (write e.g. \"64M\")"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size {s:?} is too large"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => {
            return Err(format!(
                "size {s:?} has an unknown unit {unit:?} (use K, M or G, e.g. \"64M\")"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Formats bytes the way a person writes them in lab.toml: `64M`, `1G`, `1536K`, `100`.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    if bytes >= 1 << 20 {
        return format!("{:.1}M", bytes as f64 / (1 << 20) as f64);
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmstat_lines_parse() {
        let v =
            parse_key_values("nr_free_pages 1234\npgscan_kswapd 0\n\npgscan_direct 17\n").unwrap();
        assert_eq!(v[0], ("nr_free_pages".into(), 1234));
        assert_eq!(v[2], ("pgscan_direct".into(), 17));
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn vmstat_garbage_names_its_line() {
        let e = parse_key_values("a 1\nb two\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("\"b\""), "{e}");
        assert_eq!(parse_key_values("a 1 2").unwrap_err().line, 1);
        assert_eq!(parse_key_values("lonely").unwrap_err().line, 1);
    }

    #[test]
    fn psi_parses_totals_and_averages() {
        let text = "some avg10=1.50 avg60=0.00 avg300=0.00 total=123456\n\
                    full avg10=0.25 avg60=0.00 avg300=0.00 total=99\n";
        let v = parse_psi(text).unwrap();
        assert!(v.contains(&("some.total".into(), 123456)));
        assert!(v.contains(&("some.avg10".into(), 150)));
        assert!(v.contains(&("full.avg10".into(), 25)));
        assert!(v.contains(&("full.total".into(), 99)));
        assert!(parse_psi("most total=1").is_err());
        assert!(parse_psi("some total=x").is_err());
    }

    #[test]
    fn meminfo_is_bytes() {
        let v = parse_meminfo("MemTotal:  1000 kB\nHugePages_Total:  0\n").unwrap();
        assert_eq!(v[0], ("MemTotal".into(), 1024000));
        assert_eq!(v[1], ("HugePages_Total".into(), 0));
        assert!(parse_meminfo("MemTotal: 1 MB").is_err());
    }

    #[test]
    fn zoneinfo_watermarks() {
        let text = "Node 0, zone    DMA32\n  pages free     3988\n        boost    0\n        min      33\n        low      41\n        high     49\n        managed  3840\n        protection: (0, 0)\n      nr_free_pages 3988\nNode 1, zone   Normal\n  pages free     7\n        min      1\n";
        let v = parse_zoneinfo(text).unwrap();
        assert!(v.contains(&("0.DMA32.free".into(), 3988)));
        assert!(v.contains(&("0.DMA32.low".into(), 41)));
        assert!(v.contains(&("0.DMA32.managed".into(), 3840)));
        assert!(v.contains(&("1.Normal.min".into(), 1)));
        assert!(!v.iter().any(|(k, _)| k.contains("nr_free")));
        assert!(parse_zoneinfo("Node 0, zone DMA\n        min      x\n").is_err());
    }

    #[test]
    fn a_nodes_meminfo_reads_as_meminfo() {
        let text = "Node 1 MemTotal:       262144 kB\nNode 1 MemFree:        131072 kB\n";
        let pairs = parse_node_meminfo(text).unwrap();
        let free = pairs.iter().find(|(k, _)| k == "MemFree").map(|(_, n)| *n);
        let whole = parse_meminfo("MemFree:        131072 kB\n").unwrap();
        assert_eq!(
            free,
            whole.iter().find(|(k, _)| k == "MemFree").map(|(_, n)| *n)
        );
        assert!(free.is_some());
    }

    #[test]
    fn kswapd_threads_are_told_by_their_comm() {
        assert_eq!(kswapd_node("kswapd0\n"), Some("0"));
        assert_eq!(kswapd_node("kswapd1"), Some("1"));
        assert_eq!(kswapd_node("kworker/0:1"), None);
        assert_eq!(kswapd_node("init\n"), None);
    }

    #[test]
    fn proc_cgroups_counts_a_controllers_groups() {
        let text = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t1\t1\nmemory\t1\t3\t1\nmemoryx\t0\t9\t1\n";
        assert_eq!(parse_cgroup_count(text, "memory"), Some(3));
        assert_eq!(parse_cgroup_count(text, "cpuset"), Some(1));
        assert_eq!(parse_cgroup_count(text, "hugetlb"), None);
        assert_eq!(parse_cgroup_count("memory\t1\tmany\t1\n", "memory"), None);
    }

    #[test]
    fn ktap_results_are_the_ok_and_not_ok_lines() {
        let out = "TAP version 13\n1..3\nok 1 test_a\n# note: ok 9\nnot ok 2 test_b\nok 3 test_c # SKIP\n";
        assert_eq!(count_ktap_results(out), 3);
        assert_eq!(count_ktap_results(""), 0);
        assert_eq!(count_ktap_results("    ok 1 nested\n"), 0);
    }

    #[test]
    fn proc_stat_gives_cpu_ticks_past_a_command_with_spaces() {
        let stat = "33 (kswapd0) S 2 0 0 0 -1 10485824 0 0 0 0 17 25 0 0 20 0 1 0 15 0 0";
        assert_eq!(parse_cpu_ticks(stat).unwrap(), 42);
        let odd = "7 (a) b (c)) S 2 0 0 0 -1 1 0 0 0 0 3 4 0 0";
        assert_eq!(parse_cpu_ticks(odd).unwrap(), 7);
        assert!(parse_cpu_ticks("7 (x) S 1").is_err());
        assert!(parse_cpu_ticks("no paren").is_err());
    }

    #[test]
    fn single_values() {
        assert_eq!(parse_single("4096\n").unwrap(), 4096);
        assert_eq!(parse_single("max\n").unwrap(), u64::MAX);
        assert!(parse_single("").is_err());
    }

    #[test]
    fn sizes_round_trip() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("64Q").unwrap_err().contains("unknown unit"));
        assert!(parse_size("M").is_err());
        assert!(
            parse_size("99999999999999G")
                .unwrap_err()
                .contains("too large")
        );
        for b in [64 << 20, 1 << 30, 1536 << 10, 100] {
            assert_eq!(parse_size(&format_size(b)).unwrap(), b);
        }
        assert_eq!(format_size(100 << 20), "100M");
    }
}
