//! TODO: filled in by the provider area.

#[doc(hidden)]
#[macro_export]
macro_rules! __provider_tests {
    ($make:expr) => {};
}
