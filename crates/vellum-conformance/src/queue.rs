//! TODO: filled in by the queue area.

#[doc(hidden)]
#[macro_export]
macro_rules! __queue_tests {
    ($make:expr) => {};
}
