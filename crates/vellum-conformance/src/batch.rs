//! TODO: filled in by the batch area.

#[doc(hidden)]
#[macro_export]
macro_rules! __batch_tests {
    ($make:expr) => {};
}
