//! The conformance suite every vellum provider runs.
//!
//! Each behaviour of SPEC §6 and D1-D12 is a public async function generic over a [`Backend`],
//! grouped by area. [`conformance_tests!`] instantiates all of them for one backend, each as its
//! own named `#[test]`, together with the differential property test against [`model`], a
//! deliberately simple executable model of SPEC.
//!
//! A provider crate (or a third-party provider) runs the whole suite with:
//!
//! ```ignore
//! async fn backend() -> Result<MyBackend, vellum_conformance::Skip> { Ok(MyBackend::new()) }
//! vellum_conformance::conformance_tests!(backend);
//! ```
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod fixtures;
mod harness;
/// A deliberately simple executable model of SPEC, the reference for the differential test.
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
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::__aggregate_tests!($make);
        $crate::__batch_tests!($make);
        $crate::__bulk_tests!($make);
        $crate::__event_tests!($make);
        $crate::__offset_tests!($make);
        $crate::__process_tests!($make);
        $crate::__provider_tests!($make);
        $crate::__queue_tests!($make);
        $crate::__differential_tests!($make);
    };
}

/// Generates one `#[test]` per listed conformance function.
#[doc(hidden)]
#[macro_export]
macro_rules! __tests {
    ($make:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::run(
                    concat!(stringify!($module), "::", stringify!($name)),
                    $make,
                    |backend| async move { $crate::$module::$name(&*backend).await },
                );
            }
        )*
    };
}
