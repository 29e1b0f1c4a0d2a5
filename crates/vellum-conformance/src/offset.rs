//! TODO: filled in by the offset area.

#[doc(hidden)]
#[macro_export]
macro_rules! __offset_tests {
    ($make:expr) => {};
}
