//! The conformance suite every vellum provider runs.
//!
//! Each behaviour the contract requires (docs/providers.md#conformance-suite) is a public async
//! function generic over a [`Backend`], grouped by area. [`conformance_tests!`] instantiates all
//! of them for one backend, each as its own named `#[test]`, together with the differential
//! property test against [`model`], a deliberately simple executable model of the contract
//! (docs/).
//!
//! A provider crate (or a third-party provider) runs the whole suite with:
//!
//! ```no_run
//! use vellum_conformance::{Backend, Skip};
//! use vellum_memory::MemoryProvider;
//!
//! /// The storage under test; every provider value must see the same data.
//! struct Memory(MemoryProvider);
//!
//! impl Backend for Memory {
//!     type Provider = MemoryProvider;
//!
//!     async fn provider(&self) -> MemoryProvider {
//!         self.0.clone()
//!     }
//! }
//!
//! async fn backend() -> Result<Memory, Skip> {
//!     Ok(Memory(MemoryProvider::new()))
//! }
//!
//! vellum_conformance::conformance_tests!(backend);
//! # fn main() {}
//! ```
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod fixtures;
mod harness;
/// A deliberately simple executable model of the contract (docs/), the reference for the differential test.
pub mod model;

pub mod aggregate;
pub mod batch;
pub mod bulk;
pub mod differential;
pub mod event;
pub mod offset;
pub mod process;
pub mod provider;
pub mod queue;

pub use harness::{Backend, Harness, Skip, TEST_TIMEOUT, run, runtime};

/// Instantiates every conformance test for a backend.
///
/// `$make` names an async function (or closure) returning `Result<B, Skip>` for some
/// [`Backend`] `B`; it is called once per test, so each test gets fresh storage.
///
/// Attributes after it go on every generated `#[test]`, e.g. to ignore the suite, saying why,
/// when its database server is not configured:
///
/// ```no_run
/// # use vellum_conformance::{Backend, Skip};
/// # struct Memory(vellum_memory::MemoryProvider);
/// # impl Backend for Memory {
/// #     type Provider = vellum_memory::MemoryProvider;
/// #     async fn provider(&self) -> vellum_memory::MemoryProvider { self.0.clone() }
/// # }
/// # async fn backend() -> Result<Memory, Skip> { Ok(Memory(vellum_memory::MemoryProvider::new())) }
/// vellum_conformance::conformance_tests!(
///     backend,
///     #[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
/// );
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr $(, $(#[$attr:meta])*)?) => {
        $crate::__aggregate_tests!($make, $($(#[$attr])*)?);
        $crate::__batch_tests!($make, $($(#[$attr])*)?);
        $crate::__bulk_tests!($make, $($(#[$attr])*)?);
        $crate::__event_tests!($make, $($(#[$attr])*)?);
        $crate::__offset_tests!($make, $($(#[$attr])*)?);
        $crate::__process_tests!($make, $($(#[$attr])*)?);
        $crate::__provider_tests!($make, $($(#[$attr])*)?);
        $crate::__queue_tests!($make, $($(#[$attr])*)?);
        $crate::__differential_tests!($make, $($(#[$attr])*)?);
    };
}

/// Generates one `#[test]` per listed conformance function, each with the attributes in `[…]`.
#[doc(hidden)]
#[macro_export]
macro_rules! __tests {
    ($make:expr, $attrs:tt; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            $crate::__test!($make, $attrs, $module::$name);
        )*
    };
}

/// Generates the `#[test]` of one conformance function (a macro of its own, so that the
/// attribute list repeats once per test).
#[doc(hidden)]
#[macro_export]
macro_rules! __test {
    ($make:expr, [$(#[$attr:meta])*], $module:ident :: $name:ident) => {
        $(#[$attr])*
        #[test]
        fn $name() {
            $crate::run(
                concat!(stringify!($module), "::", stringify!($name)),
                $make,
                |backend| async move { $crate::$module::$name(&*backend).await },
            );
        }
    };
}
