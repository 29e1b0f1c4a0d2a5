//! TODO: filled in by the process area.

#[doc(hidden)]
#[macro_export]
macro_rules! __process_tests {
    ($make:expr) => {};
}
