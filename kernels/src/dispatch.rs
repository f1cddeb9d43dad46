//! Which instruction-set path runs: detected once from the CPU's features and cached, overridable
//! by the `KERNELS_ISA` environment variable (read once) or per call (`ExecOptions::isa`).
//!
//! Forcing a path the CPU or the build lacks is an [`Error::IsaUnavailable`], never a crash: the
//! microkernels are `#[target_feature]` functions that must only run where the feature exists, and
//! this module is the one place that decides that.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The environment variable that forces a path for the whole process.
pub const ISA_ENV_VAR: &str = "KERNELS_ISA";

/// An instruction-set path of the compute kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust, no explicit SIMD; runs everywhere.
    Scalar,
    /// x86-64 AVX2 with FMA3 (256-bit).
    Avx2,
    /// x86-64 AVX-512F (512-bit), on a CPU that also has AVX2 and FMA3 (every one made does;
    /// checked: loops for channel counts of whole 8-lane vectors run AVX2 code on this path).
    Avx512,
    /// AArch64 Advanced SIMD (128-bit), present on every AArch64 CPU.
    Neon,
}

impl Isa {
    /// Every path this crate knows, available here or not.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// The name used by `KERNELS_ISA` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// `Ok` when this path can run on this CPU and was compiled into this build; otherwise the
    /// reason it cannot.
    pub fn check_available(self) -> Result<()> {
        let unavailable = |reason: &str| {
            Err(Error::IsaUnavailable {
                isa: self,
                reason: reason.to_string(),
            })
        };
        match self {
            Isa::Scalar => Ok(()),
            Isa::Avx2 => {
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                    {
                        return Ok(());
                    }
                    unavailable("this CPU lacks AVX2 or FMA")
                }
                #[cfg(not(target_arch = "x86_64"))]
                unavailable("AVX2 is an x86-64 instruction set")
            }
            Isa::Avx512 => {
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx512f") && Isa::Avx2.is_available() {
                        return Ok(());
                    }
                    unavailable("this CPU lacks AVX-512F, or AVX2 and FMA beside it")
                }
                #[cfg(not(target_arch = "x86_64"))]
                unavailable("AVX-512 is an x86-64 instruction set")
            }
            Isa::Neon => {
                #[cfg(target_arch = "aarch64")]
                {
                    if std::arch::is_aarch64_feature_detected!("neon") {
                        return Ok(());
                    }
                    unavailable("this CPU lacks NEON")
                }
                #[cfg(not(target_arch = "aarch64"))]
                unavailable("NEON is an AArch64 instruction set")
            }
        }
    }

    /// Whether [`Isa::check_available`] succeeds.
    pub fn is_available(self) -> bool {
        self.check_available().is_ok()
    }

    /// Every path that can run here, in [`Isa::ALL`] order.
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// The fastest path this CPU supports (detected once, then cached).
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            [Isa::Avx512, Isa::Avx2, Isa::Neon]
                .into_iter()
                .find(|isa| isa.is_available())
                .unwrap_or(Isa::Scalar)
        })
    }

    /// The path a call runs on: `forced`, if this CPU and build have it (else the reason it
    /// cannot run), or [`Isa::active`].
    pub(crate) fn resolve(forced: Option<Isa>) -> Result<Isa> {
        match forced {
            Some(isa) => {
                isa.check_available()?;
                Ok(isa)
            }
            None => Isa::active(),
        }
    }

    /// The path calls use when they do not name one: `KERNELS_ISA` if set (read once), else
    /// [`Isa::best`]. An unknown or unavailable `KERNELS_ISA` makes every such call fail with the
    /// reason, rather than silently running something else.
    pub fn active() -> Result<Isa> {
        static ACTIVE: OnceLock<Result<Isa>> = OnceLock::new();
        ACTIVE
            .get_or_init(|| match std::env::var(ISA_ENV_VAR) {
                Ok(value) if !value.trim().is_empty() => {
                    let isa = parse_isa(&value, ISA_ENV_VAR)?;
                    isa.check_available()?;
                    Ok(isa)
                }
                _ => Ok(Isa::best()),
            })
            // Copied out, not the whole Result cloned (and dropped): this runs on every call, and
            // a 16³ product takes under 100 ns.
            .as_ref()
            .copied()
            .map_err(Clone::clone)
    }
}

fn parse_isa(text: &str, source_name: &'static str) -> Result<Isa> {
    let wanted = text.trim().to_ascii_lowercase();
    Isa::ALL
        .into_iter()
        .find(|isa| isa.name() == wanted)
        .ok_or_else(|| {
            let mut expected = Isa::ALL.map(Isa::name).join(", ");
            if wanted == crate::Backend::OpenBlas.name() {
                // It was one, once: say where it went.
                expected.push_str(&format!(
                    " (OpenBLAS is a GEMM backend, not an instruction set: {}={wanted})",
                    crate::backend::BACKEND_ENV_VAR
                ));
            }
            Error::UnknownIsa {
                name: text.to_string(),
                source_name,
                expected,
            }
        })
}

impl FromStr for Isa {
    type Err = Error;

    fn from_str(s: &str) -> Result<Isa> {
        parse_isa(s, "a string")
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One loop body compiled for each instruction set, and the dispatch between them:
///
/// ```text
/// per_isa!(module_name, simd_body, scalar_body, (arg: Type, ...));
/// ```
///
/// generates `mod module_name { pub(crate) unsafe fn run(isa, arg: Type, ...) }` that calls
/// `simd_body(args)` inside a `#[target_feature]` function for AVX-512, AVX2+FMA or NEON (where
/// the compiler vectorises it at that set's width), and `scalar_body(args)` on the other paths.
/// The bodies are `#[inline(always)]` items of the invoking module. `run` is unsafe: `isa` must
/// be available on this CPU (checked by the caller).
macro_rules! per_isa {
    ($module:ident, $simd:path, $scalar:path, ($($arg:ident: $ty:ty),* $(,)?)) => {
        $crate::dispatch::per_isa_x86!($module, (avx512, avx2), $simd, $scalar,
            ($($arg: $ty),*), {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            #[allow(clippy::too_many_arguments)]
            fn avx512($($arg: $ty),*) {
                $simd($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2($($arg: $ty),*) {
                $simd($($arg),*)
            }
        });
    };
}

/// Defines module `$module` with one `unsafe fn run(isa, args…)` as [`per_isa`]'s, but x86's
/// two paths run the given functions (`#[target_feature]` functions of their own sets: written
/// in explicit vectors, or, from [`per_isa`], `$simd` compiled for each set and placed in the
/// module with the optional `{ items }`).
macro_rules! per_isa_x86 {
    ($module:ident, ($avx512:path, $avx2:path), $simd:path, $scalar:path,
     ($($arg:ident: $ty:ty),* $(,)?) $(, { $($item:item)* })?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $($($item)*)?
            #[cfg(target_arch = "aarch64")]
            #[target_feature(enable = "neon")]
            #[allow(clippy::too_many_arguments)]
            fn neon($($arg: $ty),*) {
                $simd($($arg),*)
            }

            /// # Safety
            /// `isa` is available on this CPU.
            #[allow(clippy::too_many_arguments)]
            #[inline]
            pub(crate) unsafe fn run(isa: crate::Isa, $($arg: $ty),*) {
                match isa {
                    // SAFETY: the caller guarantees the CPU has the set's features.
                    #[cfg(target_arch = "x86_64")]
                    crate::Isa::Avx512 => unsafe { $avx512($($arg),*) },
                    // SAFETY: as above.
                    #[cfg(target_arch = "x86_64")]
                    crate::Isa::Avx2 => unsafe { $avx2($($arg),*) },
                    // SAFETY: as above.
                    #[cfg(target_arch = "aarch64")]
                    crate::Isa::Neon => unsafe { neon($($arg),*) },
                    _ => $scalar($($arg),*),
                }
            }
        }
    };
}
pub(crate) use per_isa;
pub(crate) use per_isa_x86;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
            assert_eq!(isa.to_string().to_uppercase().parse::<Isa>().unwrap(), isa);
        }
    }

    #[test]
    fn unknown_name_lists_the_choices() {
        let err = "sse9".parse::<Isa>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown instruction-set path \"sse9\" (from a string); expected one of: \
             scalar, avx2, avx512, neon"
        );
        let err = "OpenBLAS".parse::<Isa>().unwrap_err();
        assert!(err.to_string().ends_with(
            "(OpenBLAS is a GEMM backend, not an instruction set: KERNELS_BACKEND=openblas)"
        ));
    }

    #[test]
    fn best_is_available_and_scalar_always_is() {
        assert!(Isa::Scalar.is_available());
        assert!(Isa::best().is_available());
        assert!(Isa::available().contains(&Isa::best()));
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_is_the_best_path_on_aarch64() {
        assert_eq!(Isa::best(), Isa::Neon);
        assert_eq!(Isa::available(), vec![Isa::Scalar, Isa::Neon]);
    }
}
