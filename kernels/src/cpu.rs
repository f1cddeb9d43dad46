//! The CPU's data caches, read once at run time: the GEMM's block sizes are derived from them
//! ([`crate::gemm`]'s cache model), so one build is blocked right for a 32 KiB-L1 Zen 3, a
//! 48 KiB-L1 Zen 5 or an Arm core alike.
//!
//! Where the figures come from, first that answers:
//! 1. x86-64: the CPUID cache leaves (leaf 4 on Intel, `0x8000_001D` on AMD and Hygon): level,
//!    ways, line size, sets and how many logical CPUs share each cache, on any operating system.
//! 2. Linux (any architecture): `/sys/devices/system/cpu/cpu0/cache/index*` (sizes, ways, sets,
//!    line, and the list of CPUs sharing each).
//! 3. [`CacheInfo::FALLBACK`]: a 32 KiB 8-way L1d, a 512 KiB 8-way L2 and a 16 MiB 16-way L3
//!    shared by 8 CPUs — small enough to be safe on any recent core.
//!
//! A hypervisor may hide the leaves or report nonsense (zero ways, a 2 KiB L2): each level is
//! checked for plausibility, and an implausible answer falls through to the next source.

use std::fmt;
use std::sync::OnceLock;

/// One data (or unified) cache level as the block-size model needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLevel {
    /// Bytes.
    pub size: usize,
    /// Associativity (ways per set).
    pub ways: usize,
    /// Bytes per line.
    pub line: usize,
    /// Logical CPUs sharing this cache (1 for a private one).
    pub shared_by: usize,
}

impl CacheLevel {
    /// Sets = size ÷ (ways · line) (0 for figures with no ways or lines).
    pub fn sets(&self) -> usize {
        self.size.checked_div(self.ways * self.line).unwrap_or(0)
    }

    /// Bytes of one way (sets · line): the unit in which the model hands out a cache.
    pub fn way_bytes(&self) -> usize {
        self.size.checked_div(self.ways).unwrap_or(0)
    }

    /// How many lines of a column of rows `stride` bytes apart (one line per row) this cache
    /// holds before they evict one another: rows a multiple of the line apart fall into
    /// `sets ÷ gcd(stride in lines, sets)` sets only, `ways` lines each (a power-of-two stride
    /// crowds them into a few sets); other strides spread over all of them.
    pub fn rows_held(&self, stride: usize) -> usize {
        let sets = self.sets();
        if self.line == 0 || sets == 0 || !stride.is_multiple_of(self.line) {
            return self.size.checked_div(self.line).unwrap_or(0);
        }
        let (mut a, mut b) = (stride / self.line, sets);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        // gcd(0, sets) = sets: a zero stride (one row) takes one set.
        sets / a.max(1) * self.ways
    }

    /// Sane figures: a power-of-two line of 16–512 bytes, at least 2 ways, a size that is a
    /// whole number of sets, and at least 4 KiB.
    fn plausible(&self) -> bool {
        self.line.is_power_of_two()
            && (16..=512).contains(&self.line)
            && self.ways >= 2
            && self.size >= 4096
            && self.shared_by >= 1
            && self.size.is_multiple_of(self.ways * self.line)
    }
}

/// Where [`CacheInfo`]'s figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSource {
    /// The CPUID cache leaves (x86-64).
    Cpuid,
    /// Linux's sysfs cache directories.
    Sysfs,
    /// Nothing usable was found: [`CacheInfo::FALLBACK`].
    Fallback,
}

impl CacheSource {
    pub fn name(self) -> &'static str {
        match self {
            CacheSource::Cpuid => "cpuid",
            CacheSource::Sysfs => "sysfs",
            CacheSource::Fallback => "built-in fallback",
        }
    }
}

/// The data-cache hierarchy of the CPU this process runs on (as seen from its first core).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheInfo {
    pub l1d: CacheLevel,
    pub l2: CacheLevel,
    /// The last-level cache, where there is a third level.
    pub l3: Option<CacheLevel>,
    pub source: CacheSource,
}

impl CacheInfo {
    /// The figures used when neither CPUID nor sysfs tells.
    pub const FALLBACK: CacheInfo = CacheInfo {
        l1d: CacheLevel {
            size: 32 << 10,
            ways: 8,
            line: 64,
            shared_by: 1,
        },
        l2: CacheLevel {
            size: 512 << 10,
            ways: 8,
            line: 64,
            shared_by: 1,
        },
        l3: Some(CacheLevel {
            size: 16 << 20,
            ways: 16,
            line: 64,
            shared_by: 8,
        }),
        source: CacheSource::Fallback,
    };

    /// Builds the hierarchy from (level, cache) pairs of data or unified caches, or `None` when
    /// L1d or L2 is missing or implausible. A third level is kept only if it is plausible.
    fn from_levels(levels: &[(u32, CacheLevel)], source: CacheSource) -> Option<CacheInfo> {
        let find = |want: u32| {
            levels
                .iter()
                .find(|(level, c)| *level == want && c.plausible())
                .map(|&(_, c)| c)
        };
        let (l1d, l2) = (find(1)?, find(2)?);
        if l2.size < l1d.size {
            return None;
        }
        let l3 = find(3).filter(|l3| l3.size >= l2.size);
        Some(CacheInfo {
            l1d,
            l2,
            l3,
            source,
        })
    }
}

impl fmt::Display for CacheLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = if self.size >= 1 << 20 && self.size.is_multiple_of(1 << 20) {
            format!("{} MiB", self.size >> 20)
        } else {
            format!("{} KiB", self.size >> 10)
        };
        write!(f, "{size} {}-way, {} B lines", self.ways, self.line)?;
        if self.shared_by > 1 {
            write!(f, ", shared by {} CPUs", self.shared_by)?;
        }
        Ok(())
    }
}

impl fmt::Display for CacheInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L1d {}; L2 {}", self.l1d, self.l2)?;
        if let Some(l3) = self.l3 {
            write!(f, "; L3 {l3}")?;
        }
        write!(f, " (from {})", self.source.name())
    }
}

/// The caches of this CPU: read once (CPUID, then sysfs, then [`CacheInfo::FALLBACK`]), then
/// cached for the life of the process.
pub fn cache_info() -> &'static CacheInfo {
    static INFO: OnceLock<CacheInfo> = OnceLock::new();
    INFO.get_or_init(|| {
        cpuid_caches()
            .or_else(sysfs_caches)
            .unwrap_or(CacheInfo::FALLBACK)
    })
}

/// [`CacheLevel::rows_held`] of this CPU's L1 data cache ([`cache_info`]) for rows `stride`
/// bytes apart, for a tile to ask at each call: its sets a power of two (as every L1's are),
/// the gcd is a count of trailing zeros ([`rows_held_in_pow2_sets`]), and the figures are
/// worked out once; other geometries take [`CacheLevel::rows_held`] itself. (For the x86-64
/// tiles of `arch::tile`, its only users.)
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn l1d_rows_held(stride: usize) -> usize {
    /// log2 of the line, log2 of the sets, ways; `None` where the sets are not a power of two.
    static SHAPE: OnceLock<Option<(u32, u32, usize)>> = OnceLock::new();
    let shape = SHAPE.get_or_init(|| pow2_shape(&cache_info().l1d));
    match *shape {
        Some(shape) => rows_held_in_pow2_sets(shape, stride),
        None => cache_info().l1d.rows_held(stride),
    }
}

/// `cache`'s line and set count as powers of two (log2 of each) and its ways, where both are
/// powers of two.
#[cfg(target_arch = "x86_64")]
fn pow2_shape(cache: &CacheLevel) -> Option<(u32, u32, usize)> {
    let sets = cache.sets();
    (sets.is_power_of_two() && cache.line.is_power_of_two()).then(|| {
        (
            cache.line.trailing_zeros(),
            sets.trailing_zeros(),
            cache.ways,
        )
    })
}

/// [`CacheLevel::rows_held`] of a cache of `2^line_bits`-byte lines in `2^set_bits` sets of
/// `ways`: gcd(stride in lines, sets) = 2^min(its trailing zeros, set bits).
#[cfg(target_arch = "x86_64")]
#[inline]
fn rows_held_in_pow2_sets((line_bits, set_bits, ways): (u32, u32, usize), stride: usize) -> usize {
    if stride & ((1 << line_bits) - 1) != 0 {
        return ways << set_bits;
    }
    // A zero stride (one row) takes one set.
    let shared = (stride >> line_bits).trailing_zeros().min(set_bits);
    ways << (set_bits - shared)
}

/// The CPU's name as it reports it (the CPUID brand string on x86-64, `/proc/cpuinfo`'s model
/// elsewhere), or `"unknown CPU"`.
pub fn cpu_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        brand_string()
            .or_else(proc_cpuinfo_model)
            .unwrap_or_else(|| "unknown CPU".to_string())
    })
}

#[cfg(target_arch = "x86_64")]
fn cpuid(leaf: u32, subleaf: u32) -> std::arch::x86_64::CpuidResult {
    // SAFETY: CPUID exists on every x86-64 CPU; it only reads identification registers.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::__cpuid_count(leaf, subleaf)
    }
}

/// Decodes one subleaf of the deterministic cache parameters (Intel leaf 4 and AMD
/// `0x8000_001D` share the layout): `None` past the last cache, `Some(None)` for an
/// instruction cache.
#[cfg(any(target_arch = "x86_64", test))]
fn decode_cache_leaf(eax: u32, ebx: u32, ecx: u32) -> Option<Option<(u32, CacheLevel)>> {
    let kind = eax & 0x1f;
    if kind == 0 {
        return None;
    }
    // 1 data, 2 instruction, 3 unified.
    if kind == 2 {
        return Some(None);
    }
    let level = (eax >> 5) & 0x7;
    let shared_by = ((eax >> 14) & 0xfff) as usize + 1;
    let line = (ebx & 0xfff) as usize + 1;
    let partitions = ((ebx >> 12) & 0x3ff) as usize + 1;
    let ways = ((ebx >> 22) & 0x3ff) as usize + 1;
    let sets = ecx as usize + 1;
    Some(Some((
        level,
        CacheLevel {
            size: ways * partitions * line * sets,
            ways,
            line,
            shared_by,
        },
    )))
}

/// Whose design the CPU is, as far as the kernels' tuning tells designs apart: the cores'
/// hardware prefetchers differ, and with them what a software prefetch saves or costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vendor {
    Intel,
    /// AMD, and Hygon's cores of AMD's design.
    Amd,
    /// Any other (an Arm core, or a hypervisor hiding the vendor string).
    Other,
}

/// The CPU's vendor, from CPUID's vendor string on x86-64; [`Vendor::Other`] elsewhere.
pub(crate) fn vendor() -> Vendor {
    static VENDOR: OnceLock<Vendor> = OnceLock::new();
    *VENDOR.get_or_init(|| vendor_of(&vendor_string()))
}

fn vendor_of(vendor_string: &[u8]) -> Vendor {
    match vendor_string {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// CPUID leaf 0's twelve bytes ("GenuineIntel", "AuthenticAMD", …); empty off x86-64.
fn vendor_string() -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    {
        let r = cpuid(0, 0);
        let mut v = Vec::with_capacity(12);
        for reg in [r.ebx, r.edx, r.ecx] {
            v.extend_from_slice(&reg.to_le_bytes());
        }
        v
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

#[cfg(target_arch = "x86_64")]
fn cpuid_caches() -> Option<CacheInfo> {
    let leaf = match vendor() {
        Vendor::Intel if cpuid(0, 0).eax >= 4 => 4,
        Vendor::Amd if cpuid(0x8000_0000, 0).eax >= 0x8000_001D => 0x8000_001D,
        _ => return None,
    };
    let mut levels = Vec::new();
    // At most a handful of caches exist; the bound guards against a leaf that never ends.
    for sub in 0..16 {
        let r = cpuid(leaf, sub);
        match decode_cache_leaf(r.eax, r.ebx, r.ecx) {
            None => break,
            Some(None) => continue,
            Some(Some(level)) => levels.push(level),
        }
    }
    CacheInfo::from_levels(&levels, CacheSource::Cpuid)
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_caches() -> Option<CacheInfo> {
    None
}

/// Parses sysfs's sizes ("48K", "1024K", "32M", or plain bytes).
fn parse_sysfs_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: usize = digits.parse().ok()?;
    let scale = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// How many CPUs a sysfs CPU list ("0-3,8-11", "5") names.
fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut count = 0usize;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        count += match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (usize, usize) = (lo.parse().ok()?, hi.parse().ok()?);
                hi.checked_sub(lo)? + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (count > 0).then_some(count)
}

fn sysfs_caches() -> Option<CacheInfo> {
    let base = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let read = |dir: &std::path::Path, name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let mut levels = Vec::new();
    for index in 0..16 {
        let dir = base.join(format!("index{index}"));
        let Some(kind) = read(&dir, "type") else {
            break;
        };
        if kind.trim() == "Instruction" {
            continue;
        }
        let level = (|| {
            let level: u32 = read(&dir, "level")?.trim().parse().ok()?;
            let size = parse_sysfs_size(&read(&dir, "size")?)?;
            let ways: usize = read(&dir, "ways_of_associativity")?.trim().parse().ok()?;
            let line: usize = read(&dir, "coherency_line_size")?.trim().parse().ok()?;
            let shared_by = read(&dir, "shared_cpu_list")
                .and_then(|l| parse_cpu_list(&l))
                .unwrap_or(1);
            Some((
                level,
                CacheLevel {
                    size,
                    ways,
                    line,
                    shared_by,
                },
            ))
        })();
        levels.extend(level);
    }
    CacheInfo::from_levels(&levels, CacheSource::Sysfs)
}

#[cfg(target_arch = "x86_64")]
fn brand_string() -> Option<String> {
    if cpuid(0x8000_0000, 0).eax < 0x8000_0004 {
        return None;
    }
    let mut bytes = Vec::with_capacity(48);
    for leaf in 0x8000_0002..=0x8000_0004u32 {
        let r = cpuid(leaf, 0);
        for reg in [r.eax, r.ebx, r.ecx, r.edx] {
            bytes.extend_from_slice(&reg.to_le_bytes());
        }
    }
    let name = String::from_utf8_lossy(&bytes)
        .trim_matches(char::from(0))
        .trim()
        .to_string();
    (!name.is_empty()).then_some(name)
}

#[cfg(not(target_arch = "x86_64"))]
fn brand_string() -> Option<String> {
    None
}

fn proc_cpuinfo_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(key, _)| matches!(key.trim(), "model name" | "Model" | "CPU part"))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendor_string_names_the_design() {
        assert_eq!(vendor_of(b"GenuineIntel"), Vendor::Intel);
        assert_eq!(vendor_of(b"AuthenticAMD"), Vendor::Amd);
        assert_eq!(vendor_of(b"HygonGenuine"), Vendor::Amd);
        assert_eq!(vendor_of(b"CentaurHauls"), Vendor::Other);
        assert_eq!(vendor_of(b""), Vendor::Other);
        // This process's CPU is one of them, and asking twice gives the same answer.
        assert_eq!(vendor(), vendor());
    }

    fn level(size: usize, ways: usize, shared_by: usize) -> CacheLevel {
        CacheLevel {
            size,
            ways,
            line: 64,
            shared_by,
        }
    }

    #[test]
    fn detected_caches_are_plausible_and_nested() {
        let info = cache_info();
        assert!(info.l1d.plausible() && info.l2.plausible(), "{info}");
        assert!(info.l2.size >= info.l1d.size, "{info}");
        if let Some(l3) = info.l3 {
            assert!(l3.size >= info.l2.size, "{info}");
        }
        assert!(!cpu_name().is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn cpuid_and_sysfs_agree_on_sizes_where_both_answer() {
        // A hypervisor may pass either through unchanged; where both answer, the per-core
        // levels the model uses must match.
        if let (Some(a), Some(b)) = (cpuid_caches(), sysfs_caches()) {
            assert_eq!(a.l1d.size, b.l1d.size, "cpuid {a} / sysfs {b}");
            assert_eq!(a.l2.size, b.l2.size, "cpuid {a} / sysfs {b}");
        }
    }

    #[test]
    fn rows_a_power_of_two_apart_crowd_into_few_sets() {
        // A 2 MiB 16-way L2 of 64-byte lines: 2048 sets of 16 lines.
        let l2 = CacheLevel {
            size: 2 << 20,
            ways: 16,
            line: 64,
            shared_by: 1,
        };
        // Rows 8 KiB apart (2048 floats) land on every 128th set: 16 sets, 256 rows.
        assert_eq!(l2.rows_held(8192), 256);
        assert_eq!(l2.rows_held(4096), 512);
        assert_eq!(l2.rows_held(2048), 1024);
        // 6 KiB = 96 lines: gcd(96, 2048) = 32, so 64 sets.
        assert_eq!(l2.rows_held(6144), 1024);
        // An odd number of lines apart reaches every set; off the line, too.
        assert_eq!(l2.rows_held(125 * 64), 32768);
        assert_eq!(l2.rows_held(4000), 32768);
        // A stride of whole ways maps every row to one set.
        assert_eq!(l2.rows_held(128 << 10), 16);
    }

    /// The tiles' quick count is the general one, on this CPU's L1 and on made-up caches
    /// (Zen 4's 32 KiB 8-way L1, a Xeon's 48 KiB 12-way, 128-byte lines, an L2 of 2048
    /// sets), over strides on and off the line, powers of two up to past a way, and none; a
    /// cache whose sets are not a power of two has no quick count.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn rows_held_quickly_as_in_general() {
        let level = |size, ways, line| CacheLevel {
            size,
            ways,
            line,
            shared_by: 1,
        };
        let here = cache_info().l1d;
        let caches = [
            here,
            level(32 << 10, 8, 64),
            level(48 << 10, 12, 64),
            level(64 << 10, 4, 128),
            level(2 << 20, 16, 64),
        ];
        for cache in caches {
            // (This CPU's L1 may report sets that are not a power of two: then only the
            // general count, which `l1d_rows_held` falls back to, is checked.)
            let shape = pow2_shape(&cache);
            assert!(
                shape.is_some() || cache == here,
                "{cache:?}: sets a power of two"
            );
            let strides = (0..5000)
                .chain((0..24).map(|s| 1usize << s))
                .chain((1..200).map(|lines| lines * cache.line))
                .chain([cache.way_bytes() * 3, usize::MAX & !127]);
            for stride in strides {
                let want = cache.rows_held(stride);
                if let Some(shape) = shape {
                    let quick = rows_held_in_pow2_sets(shape, stride);
                    assert_eq!(quick, want, "{cache:?} {stride}");
                }
                if cache == here {
                    assert_eq!(l1d_rows_held(stride), want, "stride {stride}");
                }
            }
        }
        // 48 KiB in 8 ways of 64-byte lines: 96 sets.
        assert!(pow2_shape(&level(48 << 10, 8, 64)).is_none());
    }

    #[test]
    fn cache_leaf_decoding() {
        // Zen 5's L1d as AMD's leaf 0x8000001D reports it: data, level 1, 1 sharing thread,
        // 64-byte lines, 12 ways, 64 sets.
        let eax = 1 | (1 << 5);
        let ebx = 63 | (11 << 22);
        let ecx = 63;
        assert_eq!(
            decode_cache_leaf(eax, ebx, ecx),
            Some(Some((1, level(48 << 10, 12, 1))))
        );
        // A shared 32 MiB L3: unified, level 3, 16 sharing, 16 ways, 32768 sets.
        let eax = 3 | (3 << 5) | (15 << 14);
        let ebx = 63 | (15 << 22);
        assert_eq!(
            decode_cache_leaf(eax, ebx, 32767),
            Some(Some((3, level(32 << 20, 16, 16))))
        );
        assert_eq!(decode_cache_leaf(2 | (1 << 5), ebx, 63), Some(None));
        assert_eq!(decode_cache_leaf(0, 0, 0), None);
    }

    #[test]
    fn implausible_levels_fall_through() {
        let l1 = level(32 << 10, 8, 1);
        let l2 = level(1 << 20, 16, 1);
        let ok = CacheInfo::from_levels(&[(1, l1), (2, l2)], CacheSource::Sysfs).unwrap();
        assert_eq!((ok.l1d, ok.l2, ok.l3), (l1, l2, None));
        // Zero ways, a line that is no power of two, an L2 smaller than L1: refused.
        let zero_ways = CacheLevel { ways: 0, ..l2 };
        assert!(CacheInfo::from_levels(&[(1, l1), (2, zero_ways)], CacheSource::Cpuid).is_none());
        let odd_line = CacheLevel { line: 48, ..l1 };
        assert!(CacheInfo::from_levels(&[(1, odd_line), (2, l2)], CacheSource::Cpuid).is_none());
        let tiny_l2 = level(16 << 10, 4, 1);
        assert!(CacheInfo::from_levels(&[(1, l1), (2, tiny_l2)], CacheSource::Cpuid).is_none());
        assert!(CacheInfo::from_levels(&[(2, l2)], CacheSource::Cpuid).is_none());
        assert!(CacheInfo::FALLBACK.l1d.plausible() && CacheInfo::FALLBACK.l2.plausible());
    }

    #[test]
    fn sysfs_text_parsing() {
        assert_eq!(parse_sysfs_size("48K\n"), Some(48 << 10));
        assert_eq!(parse_sysfs_size("32M"), Some(32 << 20));
        assert_eq!(parse_sysfs_size("1024"), Some(1024));
        assert_eq!(parse_sysfs_size("12Q"), None);
        assert_eq!(parse_sysfs_size(""), None);
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(parse_cpu_list("5"), Some(1));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn display_names_every_level() {
        let text = CacheInfo::FALLBACK.to_string();
        assert_eq!(
            text,
            "L1d 32 KiB 8-way, 64 B lines; L2 512 KiB 8-way, 64 B lines; \
             L3 16 MiB 16-way, 64 B lines, shared by 8 CPUs (from built-in fallback)"
        );
    }
}
