//! Bulk export ([`vellum_core::bulk`]), the part every dialect shares: the statement texts.
//! (Import is a unit of work of the store's writer, planned by `vellum_core::plan`.)
//!
//! A dialect's `bulk.rs` runs these statements on its own connections:
//! - **Export** is keyset-paginated on an index: each page starts strictly after the last key
//!   returned (`(handler_key, instance_id)`, the source key, `(next_attempt_at, sequence)`, or
//!   an event offset), so a page costs the same wherever it is in the table. Keys compare
//!   bytewise in every dialect (SQLite BINARY, PostgreSQL `COLLATE "C"` columns, MySQL
//!   `VARBINARY`), as Rust's `String` ordering does.

/// How a dialect writes the shared statements.
#[derive(Debug, Clone, Copy)]
pub struct Style<'a> {
    /// Prefix of every table name: `schema.` for PostgreSQL (a validated name), else empty.
    pub tables: &'a str,
    /// `$1, $2, …` placeholders (PostgreSQL) instead of `?`.
    pub numbered: bool,
    /// Whether a two-column keyset condition is written as a row value, `(a, b) > (?, ?)`.
    /// MariaDB does not turn a row-value comparison into an index range (it scans from the
    /// start of the app's rows), so MySQL uses the expanded `a > ? OR (a = ? AND b > ?)`,
    /// which it does; see [`BulkSql::keyset`] for the parameters each form takes.
    pub row_values: bool,
}

impl Style<'_> {
    /// `template` with `{t}` replaced by the table prefix and `?` numbered when asked.
    fn render(self, template: &str) -> String {
        let text = template.replace("{t}", self.tables);
        if !self.numbered {
            return text;
        }
        let mut out = String::with_capacity(text.len() + 16);
        let mut n = 0;
        for c in text.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// The export and stats statements of one dialect, rendered once.
///
/// Parameters: `stats` takes the app key five times; a `*_first` page takes the app key and
/// the limit; a `*_after` page takes the app key, the keyset parameters ([`BulkSql::keyset`])
/// and the limit; `events` takes the app key, the first offset and the limit.
#[derive(Debug, Clone)]
pub struct BulkSql {
    row_values: bool,
    /// Record counts: aggregates, processes, offsets, queue, and the next event offset.
    pub stats: String,
    /// Aggregates from the start: handler key, instance ID, revision, last event ID, checksum.
    pub aggregates_first: String,
    /// Aggregates after a `(handler_key, instance_id)`.
    pub aggregates_after: String,
    /// Processes from the start: handler key, instance ID, revision, media type, data, checksum.
    pub processes_first: String,
    /// Processes after a `(handler_key, instance_id)`.
    pub processes_after: String,
    /// Offsets from the start: source application key, next offset, checksum.
    pub offsets_first: String,
    /// Offsets after a source application key (its one keyset parameter).
    pub offsets_after: String,
    /// The queue from the start, in queue order: revision, failure count, `next_attempt_at`,
    /// sequence, envelope, message ID, envelope checksum, state checksum.
    pub queue_first: String,
    /// The queue after a `(next_attempt_at, sequence, message_id)`.
    pub queue_after: String,
    /// Events from an offset on, in offset order: offset, envelope, checksum.
    pub events: String,
    /// Verify: events from an offset on, with the columns indexes are built on: offset,
    /// envelope, checksum, message ID, portable name, handler key, instance ID.
    pub verify_events: String,
    /// Verify: the queue from the start in message ID order: message ID, revision, failure
    /// count, `next_attempt_at`, sequence, envelope, envelope checksum, state checksum, timeout
    /// handler key, timeout instance ID.
    pub verify_queue_first: String,
    /// Verify: the queue after a message ID.
    pub verify_queue_after: String,
    /// Verify: the counter row: next offset, next sequence, checksum.
    pub verify_counters: String,
}

impl BulkSql {
    /// Renders every statement in `style`.
    #[must_use]
    pub fn new(style: Style<'_>) -> Self {
        let keyset = |columns: &[&str]| keyset_condition(style.row_values, columns);
        let page = |select: &str, table: &str, after: Option<&str>, order: &str| {
            let after = after.map(|c| format!(" AND {c}")).unwrap_or_default();
            style.render(&format!(
                "SELECT {select} FROM {{t}}{table} WHERE app_key = ?{after} ORDER BY {order} LIMIT ?"
            ))
        };
        let (agg, proc_) = (
            "handler_key, instance_id, revision, last_event_id, checksum",
            "handler_key, instance_id, revision, media_type, data, checksum",
        );
        let by_instance = keyset(&["handler_key", "instance_id"]);
        let queue = "revision, failure_count, next_attempt_at, sequence, envelope, message_id, \
                     envelope_checksum, state_checksum";
        let queue_order = "next_attempt_at, sequence, message_id";
        let verify_queue = "message_id, revision, failure_count, next_attempt_at, sequence, envelope, \
                            envelope_checksum, state_checksum, timeout_handler_key, timeout_instance_id";
        let queue_keyset = keyset(&["next_attempt_at", "sequence", "message_id"]);
        Self {
            row_values: style.row_values,
            stats: style.render(
                "SELECT (SELECT COUNT(*) FROM {t}vellum_aggregate WHERE app_key = ?), \
                 (SELECT COUNT(*) FROM {t}vellum_process WHERE app_key = ?), \
                 (SELECT COUNT(*) FROM {t}vellum_offset WHERE app_key = ?), \
                 (SELECT COUNT(*) FROM {t}vellum_queue WHERE app_key = ?), \
                 COALESCE((SELECT next_offset FROM {t}vellum_app WHERE app_key = ?), 0)",
            ),
            aggregates_first: page(agg, "vellum_aggregate", None, "handler_key, instance_id"),
            aggregates_after: page(agg, "vellum_aggregate", Some(&by_instance), "handler_key, instance_id"),
            processes_first: page(proc_, "vellum_process", None, "handler_key, instance_id"),
            processes_after: page(proc_, "vellum_process", Some(&by_instance), "handler_key, instance_id"),
            offsets_first: page(
                "source_app_key, next_offset, checksum",
                "vellum_offset",
                None,
                "source_app_key",
            ),
            offsets_after: page(
                "source_app_key, next_offset, checksum",
                "vellum_offset",
                Some("source_app_key > ?"),
                "source_app_key",
            ),
            queue_first: page(queue, "vellum_queue", None, queue_order),
            queue_after: page(queue, "vellum_queue", Some(&queue_keyset), queue_order),
            verify_events: page(
                "event_offset, envelope, checksum, message_id, portable_name, handler_key, instance_id",
                "vellum_event",
                Some("event_offset >= ?"),
                "event_offset",
            ),
            verify_queue_first: page(verify_queue, "vellum_queue", None, "message_id"),
            verify_queue_after: page(verify_queue, "vellum_queue", Some("message_id > ?"), "message_id"),
            verify_counters: style
                .render("SELECT next_offset, next_sequence, checksum FROM {t}vellum_app WHERE app_key = ?"),
            events: page(
                "event_offset, envelope, checksum",
                "vellum_event",
                Some("event_offset >= ?"),
                "event_offset",
            ),
        }
    }

    /// The parameters of a keyset condition after `key` (one value per column): the values
    /// for a row value; for the expanded form, every value but the last twice.
    #[must_use]
    pub fn keyset<T: Clone>(&self, key: Vec<T>) -> Vec<T> {
        if self.row_values {
            return key;
        }
        let last = key.len().saturating_sub(1);
        key.into_iter()
            .enumerate()
            .flat_map(|(i, v)| if i < last { vec![v.clone(), v] } else { vec![v] })
            .collect()
    }
}

/// "Strictly after `key`" over `columns`: `(a, b) > (?, ?)` as a row value, or written out as
/// `(a > ? OR (a = ? AND b > ?))` for servers that cannot use an index for row values.
fn keyset_condition(row_values: bool, columns: &[&str]) -> String {
    if row_values {
        let marks = vec!["?"; columns.len()].join(", ");
        return format!("({}) > ({marks})", columns.join(", "));
    }
    match columns {
        [] => "TRUE".to_owned(),
        [last] => format!("{last} > ?"),
        [first, rest @ ..] => format!("({first} > ? OR ({first} = ? AND {}))", keyset_condition(false, rest)),
    }
}

/// `usize` as a SQL `LIMIT`.
#[must_use]
pub fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_render_per_dialect() {
        let pg = BulkSql::new(Style { tables: "s.", numbered: true, row_values: true });
        assert_eq!(
            pg.aggregates_after,
            "SELECT handler_key, instance_id, revision, last_event_id, checksum FROM s.vellum_aggregate \
             WHERE app_key = $1 AND (handler_key, instance_id) > ($2, $3) ORDER BY handler_key, instance_id \
             LIMIT $4"
        );
        let my = BulkSql::new(Style { tables: "", numbered: false, row_values: false });
        assert!(my.queue_after.contains(
            "(next_attempt_at > ? OR (next_attempt_at = ? AND (sequence > ? OR (sequence = ? AND message_id > ?))))"
        ));
        assert!(pg.queue_after.contains("(next_attempt_at, sequence, message_id) > ($2, $3, $4)"));
        assert_eq!(my.keyset(vec![1, 2, 3]), [1, 1, 2, 2, 3]);
        assert_eq!(my.keyset(vec![1, 2]), [1, 1, 2]);
        assert_eq!(pg.keyset(vec![1, 2]), [1, 2]);
    }
}
