//! TODO: filled in by the event area.

#[doc(hidden)]
#[macro_export]
macro_rules! __event_tests {
    ($make:expr) => {};
}
