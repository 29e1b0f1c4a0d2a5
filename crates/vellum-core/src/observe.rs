//! The `tracing` spans every provider emits, named and shaped once so `vellum -v` and
//! `RUST_LOG` filters read the same across providers.
//!
//! | span | level | fields |
//! |---|---|---|
//! | `vellum.open` | info | `provider`, `app_key`, `outcome` |
//! | `vellum.persist` | debug | `provider`, `app_key`, `ops`, `outcome` |
//! | `vellum.commit` | debug | `provider`, `app_key`, `batches` (the group size), `outcome` |
//! | `vellum.query` | trace | `provider`, `app_key`, `query` |
//! | `vellum.import` | debug | `provider`, `app_key`, `records`, `outcome` |
//! | `vellum.export` | debug | `provider`, `app_key`, `limit` (the page size asked for) |
//!
//! Durations come from the subscriber (`time.busy` / `time.idle` when spans close).

use tracing::Span;
use tracing::field::Empty;

use crate::error::{Error, Result};

/// The span of opening a store.
#[must_use]
pub fn open_span(provider: &'static str, app_key: &str) -> Span {
    tracing::info_span!("vellum.open", provider, app_key, outcome = Empty)
}

/// The span of one `persist` call, from submission to its result.
#[must_use]
pub fn persist_span(provider: &'static str, app_key: &str, ops: usize) -> Span {
    tracing::debug_span!("vellum.persist", provider, app_key, ops, outcome = Empty)
}

/// The span of one write transaction holding `batches` batches (a commit group).
#[must_use]
pub fn commit_span(provider: &'static str, app_key: &str, batches: usize) -> Span {
    tracing::debug_span!("vellum.commit", provider, app_key, batches, outcome = Empty)
}

/// The span of one read: `query` names it (`aggregate`, `events_by_type`, `queue`, ...).
#[must_use]
pub fn query_span(provider: &'static str, app_key: &str, query: &'static str) -> Span {
    tracing::trace_span!("vellum.query", provider, app_key, query)
}

/// The span of one bulk call: `vellum.import` of `count` records, or `vellum.export` of a page
/// of at most `count` records.
#[must_use]
pub fn bulk_span(provider: &'static str, app_key: &str, import: bool, count: usize) -> Span {
    if import {
        tracing::debug_span!("vellum.import", provider, app_key, records = count, outcome = Empty)
    } else {
        tracing::debug_span!("vellum.export", provider, app_key, limit = count)
    }
}

/// Records `result`'s outcome on `span` and returns it unchanged.
pub fn record<T>(span: &Span, result: Result<T>) -> Result<T> {
    span.record("outcome", outcome(&result));
    result
}

/// A one-word outcome: `ok`, `conflict`, `duplicate_event`, `invalid`, `closed`, `locked`,
/// or `error`.
#[must_use]
pub fn outcome<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(Error::Conflict { .. }) => "conflict",
        Err(Error::DuplicateEvent { .. }) => "duplicate_event",
        Err(Error::InvalidBatch(_) | Error::InvalidImport(_)) => "invalid",
        Err(Error::Closed) => "closed",
        Err(Error::Locked { .. }) => "locked",
        Err(_) => "error",
    }
}
