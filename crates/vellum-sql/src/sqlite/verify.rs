//! Verify's reads for SQLite (see `crate::verify`): raw row pages, the indexes read through
//! themselves (`INDEXED BY`, so a damaged index b-tree shows as entries that disagree with the
//! table), and `PRAGMA integrity_check`.

use rusqlite::{Row, ToSql};
use vellum_core::Result;
use vellum_core::verify::{Checker, Fact, Index, Problem};

use super::bulk::SQL;
use super::reads::SqliteReads;
use crate::bulk::limit;
use crate::schema::from_db;
use crate::verify::{PAGE, RawRow, VerifyPage};

/// The indexes SQLite keeps beside the tables, and which this dialect reads for verify.
pub(super) const INDEXES: [Index; 4] =
    [Index::ByType, Index::BySource, Index::QueueOrder, Index::TimeoutOwners];

impl SqliteReads {
    /// One page of raw rows.
    pub(super) fn raw_page(&self, page: &VerifyPage) -> Result<Vec<RawRow>> {
        let (app, n, sql) = (self.app_key(), limit(PAGE), &*SQL);
        let rows = |statement: &str, params: &[&dyn ToSql], f: fn(&Row<'_>) -> rusqlite::Result<RawRow>| {
            self.with("verifying rows", |conn| {
                conn.prepare_cached(statement)?.query_map(params, f)?.collect()
            })
        };
        match page {
            VerifyPage::Events(from) => rows(&sql.verify_events, &[&app, from, &n], |r| {
                Ok(RawRow::Event {
                    offset: r.get(0)?,
                    envelope: r.get(1)?,
                    sum: r.get(2)?,
                    message_id: r.get(3)?,
                    portable_name: r.get(4)?,
                    handler_key: r.get(5)?,
                    instance_id: r.get(6)?,
                })
            }),
            VerifyPage::Queue(after) => {
                let queue = |r: &Row<'_>| {
                    Ok(RawRow::Queue {
                        message_id: r.get(0)?,
                        revision: r.get(1)?,
                        failure_count: r.get(2)?,
                        next_attempt_at: r.get(3)?,
                        sequence: r.get(4)?,
                        envelope: r.get(5)?,
                        envelope_sum: r.get(6)?,
                        state_sum: r.get(7)?,
                        timeout_owner: (r.get(8)?, r.get(9)?),
                    })
                };
                match after {
                    None => rows(&sql.verify_queue_first, &[&app, &n], queue),
                    Some(id) => rows(&sql.verify_queue_after, &[&app, id, &n], queue),
                }
            }
            VerifyPage::Aggregates(after) => {
                let aggregate = |r: &Row<'_>| {
                    Ok(RawRow::Aggregate {
                        handler_key: r.get(0)?,
                        instance_id: r.get(1)?,
                        revision: r.get(2)?,
                        last_event_id: r.get(3)?,
                        sum: r.get(4)?,
                    })
                };
                match after {
                    None => rows(&sql.aggregates_first, &[&app, &n], aggregate),
                    Some((h, i)) => rows(&sql.aggregates_after, &[&app, h, i, &n], aggregate),
                }
            }
            VerifyPage::Processes(after) => {
                let process = |r: &Row<'_>| {
                    Ok(RawRow::Process {
                        handler_key: r.get(0)?,
                        instance_id: r.get(1)?,
                        revision: r.get(2)?,
                        media_type: r.get(3)?,
                        data: r.get(4)?,
                        sum: r.get(5)?,
                    })
                };
                match after {
                    None => rows(&sql.processes_first, &[&app, &n], process),
                    Some((h, i)) => rows(&sql.processes_after, &[&app, h, i, &n], process),
                }
            }
            VerifyPage::Offsets(after) => {
                let offset = |r: &Row<'_>| {
                    Ok(RawRow::Offset { source: r.get(0)?, next_offset: r.get(1)?, sum: r.get(2)? })
                };
                match after {
                    None => rows(&sql.offsets_first, &[&app, &n], offset),
                    Some(source) => rows(&sql.offsets_after, &[&app, source, &n], offset),
                }
            }
        }
    }

    /// The counter row.
    pub(super) fn raw_counters(&self) -> Result<Option<(i64, i64, i64)>> {
        use rusqlite::OptionalExtension as _;
        self.with("verifying the counters", |conn| {
            conn.prepare_cached(&SQL.verify_counters)?
                .query_row([self.app_key()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
    }

    /// `PRAGMA integrity_check` over the whole database file, then every entry of the indexes
    /// of the application's rows, each read through its own index.
    pub(super) fn check_engine(&self, checker: &mut Checker) -> Result<()> {
        let lines: Vec<String> = self.with("running PRAGMA integrity_check", |conn| {
            conn.prepare("PRAGMA integrity_check")?.query_map([], |r| r.get(0))?.collect()
        })?;
        let problems = lines
            .into_iter()
            .filter(|line| line != "ok")
            .map(|line| Problem::new("database file", line))
            .collect();
        checker.engine_check("SQLite PRAGMA integrity_check", problems);
        let app = self.app_key();
        self.with("reading the indexes", |conn| {
            let mut s = conn.prepare(
                "SELECT portable_name, event_offset FROM vellum_event INDEXED BY vellum_event_by_type \
                 WHERE app_key = ?1 ORDER BY portable_name, event_offset",
            )?;
            let mut rows = s.query([app])?;
            while let Some(r) = rows.next()? {
                let (name, offset): (String, i64) = (r.get(0)?, r.get(1)?);
                checker.fact(Fact::ByType { portable_name: &name, offset: from_db(offset) });
            }
            let mut s = conn.prepare(
                "SELECT handler_key, instance_id, event_offset FROM vellum_event INDEXED BY vellum_event_by_source \
                 WHERE app_key = ?1 ORDER BY handler_key, instance_id, event_offset",
            )?;
            let mut rows = s.query([app])?;
            while let Some(r) = rows.next()? {
                let (h, i, offset): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
                checker.fact(Fact::BySource { handler_key: &h, instance_id: &i, offset: from_db(offset) });
            }
            let mut s = conn.prepare(
                "SELECT next_attempt_at, sequence, message_id FROM vellum_queue INDEXED BY vellum_queue_by_time \
                 WHERE app_key = ?1 ORDER BY next_attempt_at, sequence, message_id",
            )?;
            let mut rows = s.query([app])?;
            while let Some(r) = rows.next()? {
                let (at, sequence, id): (i64, i64, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
                checker.fact(Fact::QueueOrder { next_attempt_at: at, sequence: from_db(sequence), message_id: &id });
            }
            let mut s = conn.prepare(
                "SELECT timeout_handler_key, timeout_instance_id, message_id FROM vellum_queue \
                 INDEXED BY vellum_queue_by_owner WHERE app_key = ?1 AND timeout_handler_key IS NOT NULL",
            )?;
            let mut rows = s.query([app])?;
            while let Some(r) = rows.next()? {
                let (h, i, id): (String, Option<String>, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
                let i = i.unwrap_or_default();
                checker.fact(Fact::TimeoutOwner { handler_key: &h, instance_id: &i, message_id: &id });
            }
            Ok(())
        })
    }
}
