//! Units for people: what a counter counts (bytes, pages, microseconds, events), read from its
//! name, and numbers written the way a student reads them (`32.0 MiB`, `4416 pages (17.3 MiB)`,
//! `175.4 ms`). Pure: names in, text out.

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    /// 4 KiB pages (x86-64).
    Pages,
    Micros,
    /// Events or anything else without a size (OOM kills, episodes, clock ticks).
    Count,
}

/// Bytes per page on the guests (x86-64).
pub const PAGE: u64 = 4096;

/// cgroup v1's memory.stat keys that are sizes in bytes (v2's are the counter registry's
/// levels, [`guest::counters::MEMORY_STAT_LEVELS`]).
const V1_STAT_BYTES: &[&str] = &[
    "cache",
    "rss",
    "rss_huge",
    "mapped_file",
    "dirty",
    "writeback",
    "swap",
];

/// Whether a memory.stat key (v2, or v1 without its `total_` prefix) is a size in bytes.
fn stat_bytes(key: &str) -> bool {
    guest::counters::MEMORY_STAT_LEVELS.contains(&key) || V1_STAT_BYTES.contains(&key)
}

/// Event counters that count pages (reclaim, swap, refaults).
const PAGE_EVENTS: &[&str] = &[
    "pgscan",
    "pgsteal",
    "pswpin",
    "pswpout",
    "zswpin",
    "zswpout",
    "zswpwb",
    "pgrefill",
    "pgactivate",
    "pgdeactivate",
    "pgfree",
    "pgalloc",
    "pgrotated",
    "pglazyfree",
    "pgdemote",
    "pgpromote",
    "workingset_",
    "nr_",
];

/// The unit of one counter name as the spec writes it (`W/memory.stat.anon`, `vmstat.pgscan_kswapd`).
pub fn unit_of(counter: &str) -> Unit {
    let rest = counter.split_once('/').map(|(_, r)| r).unwrap_or(counter);
    if rest.ends_with(".total") && rest.contains("pressure.") || rest.ends_with("_us") {
        return Unit::Micros;
    }
    let last = rest.rsplit('.').next().unwrap_or(rest);
    if let Some(key) = rest
        .strip_prefix("memory.stat.")
        .or_else(|| rest.strip_prefix("v1.memory.stat."))
    {
        if stat_bytes(key) || key.strip_prefix("total_").is_some_and(stat_bytes) {
            return Unit::Bytes;
        }
        return page_event(key);
    }
    if rest.starts_with("meminfo.") {
        return if last.starts_with("HugePages_") {
            Unit::Count
        } else {
            Unit::Bytes
        };
    }
    if matches!(
        rest,
        "memory.current" | "memory.peak" | "memory.swap.current" | "memory.swap.peak"
    ) || rest.starts_with("v1.memory.") && rest.ends_with("_in_bytes")
        || rest == "memory.usage_in_bytes"
    {
        return Unit::Bytes;
    }
    if rest.starts_with("zoneinfo.") {
        return Unit::Pages;
    }
    if let Some(key) = rest.strip_prefix("vmstat.") {
        return page_event(key);
    }
    if rest.starts_with("trace.") && rest.ends_with("nr_reclaimed") {
        return Unit::Pages;
    }
    Unit::Count
}

fn page_event(key: &str) -> Unit {
    if PAGE_EVENTS.iter().any(|p| key.starts_with(p)) {
        Unit::Pages
    } else {
        Unit::Count
    }
}

/// The unit of a counter expression: its terms' common unit, or a count when they differ.
pub fn unit_of_expr(terms: &[&str]) -> Unit {
    let mut units = terms.iter().map(|t| unit_of(t));
    let first = units.next().unwrap_or(Unit::Count);
    if units.all(|u| u == first) {
        first
    } else {
        Unit::Count
    }
}

/// `512 B`, `17.3 KiB`, `32.0 MiB`, `1.50 GiB` (binary units, as the kernel's limits are written).
pub fn bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let x = n as f64;
    if x < K {
        format!("{n} B")
    } else if x < K * K {
        format!("{:.1} KiB", x / K)
    } else if x < K * K * K {
        format!("{:.1} MiB", x / (K * K))
    } else {
        format!("{:.2} GiB", x / (K * K * K))
    }
}

/// `850 µs`, `175.4 ms`, `2.35 s`.
pub fn micros(n: u64) -> String {
    if n < 1000 {
        format!("{n} µs")
    } else if n < 1_000_000 {
        format!("{:.1} ms", n as f64 / 1000.0)
    } else {
        format!("{:.2} s", n as f64 / 1e6)
    }
}

/// A value in its unit: `32.0 MiB`, `4416 pages (17.3 MiB)`, `175.4 ms`, `69`.
pub fn human(n: u64, unit: Unit) -> String {
    match unit {
        Unit::Bytes => bytes(n),
        Unit::Pages if n == 0 => "0 pages".into(),
        Unit::Pages if n == 1 => "1 page".into(),
        Unit::Pages => format!("{n} pages ({})", bytes(n.saturating_mul(PAGE))),
        Unit::Micros => micros(n),
        Unit::Count => n.to_string(),
    }
}

/// A change with its sign: `+32.0 MiB`, `-1.2 MiB`, `+4416 pages (17.3 MiB)`, `+0`.
pub fn human_delta(d: i64, unit: Unit) -> String {
    let sign = if d < 0 { "-" } else { "+" };
    if d == 0 {
        return "+0".into();
    }
    format!("{sign}{}", human(d.unsigned_abs(), unit))
}

/// Greedy word wrap: lines of at most `width` characters (a longer word gets a line of its
/// own), the first prefixed by `first`, the others by `rest`.
pub fn wrap(text: &str, width: usize, first: &str, rest: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        let len = line.chars().count() + usize::from(!empty) + word.chars().count();
        if !empty && len > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = rest.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

/// The width to wrap terminal text at: the terminal's, else `$COLUMNS`, else 100; at least 60.
pub fn terminal_width() -> usize {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize; a failure leaves it zeroed.
    let tty = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    let cols = if tty && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(100)
    };
    cols.clamp(60, 160)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_come_from_the_name() {
        assert_eq!(unit_of("W/memory.current"), Unit::Bytes);
        assert_eq!(unit_of("W/memory.peak"), Unit::Bytes);
        assert_eq!(unit_of("W/memory.stat.anon"), Unit::Bytes);
        assert_eq!(unit_of("W/memory.stat.file_dirty"), Unit::Bytes);
        assert_eq!(unit_of("W/memory.stat.pgscan_direct"), Unit::Pages);
        assert_eq!(unit_of("W/memory.stat.pgfault"), Unit::Count);
        assert_eq!(unit_of("W/memory.events.max"), Unit::Count);
        assert_eq!(unit_of("W/memory.pressure.some.total"), Unit::Micros);
        assert_eq!(unit_of("pressure.full.total"), Unit::Micros);
        assert_eq!(unit_of("meminfo.MemFree"), Unit::Bytes);
        assert_eq!(unit_of("vmstat.pgscan_kswapd"), Unit::Pages);
        assert_eq!(unit_of("vmstat.nr_dirty"), Unit::Pages);
        assert_eq!(unit_of("vmstat.allocstall_normal"), Unit::Count);
        assert_eq!(unit_of("vmstat.oom_kill"), Unit::Count);
        assert_eq!(unit_of("zoneinfo.0.DMA32.low"), Unit::Pages);
        assert_eq!(unit_of("trace.W.memcg_reclaim.blocked_us"), Unit::Micros);
        assert_eq!(unit_of("trace.W.memcg_reclaim.nr_reclaimed"), Unit::Pages);
        assert_eq!(unit_of("trace.W.memcg_reclaim.episodes"), Unit::Count);
        assert_eq!(unit_of("v1.memory.limit_in_bytes"), Unit::Bytes);
        assert_eq!(unit_of("kswapd.0.cpu_ticks"), Unit::Count);
        assert_eq!(
            unit_of_expr(&["vmstat.pgscan_anon", "vmstat.pgscan_file"]),
            Unit::Pages
        );
        assert_eq!(
            unit_of_expr(&["vmstat.pgscan_anon", "vmstat.oom_kill"]),
            Unit::Count
        );
    }

    #[test]
    fn numbers_read_as_people_read_them() {
        assert_eq!(human_delta(33554432, Unit::Bytes), "+32.0 MiB");
        assert_eq!(human_delta(-1258291, Unit::Bytes), "-1.2 MiB");
        assert_eq!(human_delta(4416, Unit::Pages), "+4416 pages (17.2 MiB)");
        assert_eq!(human_delta(175392, Unit::Micros), "+175.4 ms");
        assert_eq!(human_delta(2_350_000, Unit::Micros), "+2.35 s");
        assert_eq!(human_delta(0, Unit::Bytes), "+0");
        assert_eq!(human_delta(69, Unit::Count), "+69");
        assert_eq!(human(1, Unit::Pages), "1 page");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 30), "3.00 GiB");
    }

    #[test]
    fn wrapping_keeps_words_and_indents() {
        let w = wrap("one two three four five six", 14, "  → ", "    ");
        assert_eq!(w, "  → one two\n    three four\n    five six\n");
        for line in w.lines() {
            assert!(line.chars().count() <= 14, "{line}");
        }
        assert_eq!(
            wrap("averyveryverylongword x", 8, "", ""),
            "averyveryverylongword\nx\n"
        );
    }
}
