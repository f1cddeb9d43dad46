//! Which implementation runs the products (GEMM, and the convolutions built on it): this crate's
//! own blocked driver on the chosen instruction set ([`Backend::Native`]), or the system
//! OpenBLAS through CBLAS ([`Backend::OpenBlas`], cargo feature `openblas`), a yardstick and a
//! fallback to ask for, never chosen automatically. Orthogonal to [`crate::Isa`]: under OpenBLAS
//! the parts of a call that are not a product (epilogues, pooling, activations) still run on the
//! resolved instruction set.
//!
//! Chosen per call ([`crate::ExecOptions::backend`]) or for the process by the `KERNELS_BACKEND`
//! environment variable (read once); asking for one this build lacks is an
//! [`Error::BackendUnavailable`].

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The environment variable that chooses the backend for the whole process.
pub const BACKEND_ENV_VAR: &str = "KERNELS_BACKEND";

/// The implementation behind products.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Backend {
    /// This crate's blocked GEMM on the resolved instruction set.
    #[default]
    Native,
    /// The system OpenBLAS through CBLAS (cargo feature `openblas`).
    OpenBlas,
}

impl Backend {
    /// Every backend this crate knows, available in this build or not.
    pub const ALL: [Backend; 2] = [Backend::Native, Backend::OpenBlas];

    /// The name used by `KERNELS_BACKEND` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::OpenBlas => "openblas",
        }
    }

    /// `Ok` when this build can run the backend; otherwise the reason it cannot.
    pub fn check_available(self) -> Result<()> {
        match self {
            Backend::Native => Ok(()),
            Backend::OpenBlas if cfg!(feature = "openblas") => Ok(()),
            Backend::OpenBlas => Err(Error::BackendUnavailable {
                backend: self,
                reason: "this build of `kernels` has no `openblas` cargo feature".into(),
            }),
        }
    }

    /// Whether [`Backend::check_available`] succeeds.
    pub fn is_available(self) -> bool {
        self.check_available().is_ok()
    }

    /// The backend a call runs on: `forced`, if this build has it (else the reason it cannot),
    /// or [`Backend::active`].
    pub(crate) fn resolve(forced: Option<Backend>) -> Result<Backend> {
        match forced {
            Some(backend) => backend.check_available().map(|()| backend),
            None => Backend::active(),
        }
    }

    /// Whether a call naming `forced` runs on our own kernels: [`Backend::resolve`] gives
    /// [`Backend::Native`]. (A backend it cannot resolve reads as not ours: the call's own
    /// resolve reports the reason.)
    pub(crate) fn runs_native(forced: Option<Backend>) -> bool {
        matches!(Backend::resolve(forced), Ok(Backend::Native))
    }

    /// The backend calls use when they do not name one: `KERNELS_BACKEND` if set (read once),
    /// else [`Backend::Native`]. An unknown or unavailable value makes every such call fail with
    /// the reason, rather than silently running something else.
    pub fn active() -> Result<Backend> {
        static ACTIVE: OnceLock<Result<Backend>> = OnceLock::new();
        ACTIVE
            .get_or_init(|| match std::env::var(BACKEND_ENV_VAR) {
                Ok(value) if !value.trim().is_empty() => {
                    let backend = parse(&value, BACKEND_ENV_VAR)?;
                    backend.check_available().map(|()| backend)
                }
                _ => Ok(Backend::Native),
            })
            // Copied out, as Isa::active: this runs on every call.
            .as_ref()
            .copied()
            .map_err(Clone::clone)
    }
}

fn parse(text: &str, source_name: &'static str) -> Result<Backend> {
    let wanted = text.trim().to_ascii_lowercase();
    Backend::ALL
        .into_iter()
        .find(|b| b.name() == wanted)
        .ok_or_else(|| Error::UnknownBackend {
            name: text.to_string(),
            source_name,
            expected: Backend::ALL.map(Backend::name).join(", "),
        })
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Backend> {
        parse(s, "a string")
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in Backend::ALL {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
            assert_eq!(b.to_string().to_uppercase().parse::<Backend>().unwrap(), b);
        }
    }

    #[test]
    fn unknown_name_lists_the_choices() {
        let err = "mkl".parse::<Backend>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown GEMM backend \"mkl\" (from a string); expected one of: native, openblas"
        );
    }

    #[test]
    fn openblas_is_available_exactly_with_its_feature() {
        assert!(Backend::Native.is_available());
        assert_eq!(Backend::OpenBlas.is_available(), cfg!(feature = "openblas"));
    }
}
