//! Verify's reads for PostgreSQL (see `crate::verify`): raw row pages and the counter row.
//! PostgreSQL's index structures are checked by the server (`amcheck`, not assumed to be
//! installed), so this dialect feeds no index entries; each row's index columns are checked
//! against its envelope instead.

use tokio_postgres::Row;
use vellum_core::Result;

use super::reads::PostgresReads;
use crate::bulk::limit;
use crate::verify::{PAGE, RawRow, VerifyPage};

impl PostgresReads {
    /// One page of raw rows.
    pub(super) async fn raw_page(&self, page: &VerifyPage) -> Result<Vec<RawRow>> {
        let doing = "verifying rows";
        let (app, n, sql) = (self.app_key.as_str(), limit(PAGE), &self.sql.bulk);
        let rows = match page {
            VerifyPage::Events(from) => self.query(doing, &sql.verify_events, &[&app, from, &n]).await?,
            VerifyPage::Queue(None) => self.query(doing, &sql.verify_queue_first, &[&app, &n]).await?,
            VerifyPage::Queue(Some(id)) => {
                self.query(doing, &sql.verify_queue_after, &[&app, id, &n]).await?
            }
            VerifyPage::Aggregates(None) => self.query(doing, &sql.aggregates_first, &[&app, &n]).await?,
            VerifyPage::Aggregates(Some((h, i))) => {
                self.query(doing, &sql.aggregates_after, &[&app, h, i, &n]).await?
            }
            VerifyPage::Processes(None) => self.query(doing, &sql.processes_first, &[&app, &n]).await?,
            VerifyPage::Processes(Some((h, i))) => {
                self.query(doing, &sql.processes_after, &[&app, h, i, &n]).await?
            }
            VerifyPage::Offsets(None) => self.query(doing, &sql.offsets_first, &[&app, &n]).await?,
            VerifyPage::Offsets(Some(source)) => {
                self.query(doing, &sql.offsets_after, &[&app, source, &n]).await?
            }
        };
        rows.iter().map(|row| self.raw_row(page, row)).collect()
    }

    fn raw_row(&self, page: &VerifyPage, r: &Row) -> Result<RawRow> {
        let doing = "verifying rows";
        Ok(match page {
            VerifyPage::Events(_) => RawRow::Event {
                offset: self.get(r, 0, doing)?,
                envelope: self.get(r, 1, doing)?,
                sum: self.get(r, 2, doing)?,
                message_id: self.get(r, 3, doing)?,
                portable_name: self.get(r, 4, doing)?,
                handler_key: self.get(r, 5, doing)?,
                instance_id: self.get(r, 6, doing)?,
            },
            VerifyPage::Queue(_) => RawRow::Queue {
                message_id: self.get(r, 0, doing)?,
                revision: self.get(r, 1, doing)?,
                failure_count: self.get(r, 2, doing)?,
                next_attempt_at: self.get(r, 3, doing)?,
                sequence: self.get(r, 4, doing)?,
                envelope: self.get(r, 5, doing)?,
                envelope_sum: self.get(r, 6, doing)?,
                state_sum: self.get(r, 7, doing)?,
                timeout_owner: (self.get(r, 8, doing)?, self.get(r, 9, doing)?),
            },
            VerifyPage::Aggregates(_) => RawRow::Aggregate {
                handler_key: self.get(r, 0, doing)?,
                instance_id: self.get(r, 1, doing)?,
                revision: self.get(r, 2, doing)?,
                last_event_id: self.get(r, 3, doing)?,
                sum: self.get(r, 4, doing)?,
            },
            VerifyPage::Processes(_) => RawRow::Process {
                handler_key: self.get(r, 0, doing)?,
                instance_id: self.get(r, 1, doing)?,
                revision: self.get(r, 2, doing)?,
                media_type: self.get(r, 3, doing)?,
                data: self.get(r, 4, doing)?,
                sum: self.get(r, 5, doing)?,
            },
            VerifyPage::Offsets(_) => RawRow::Offset {
                source: self.get(r, 0, doing)?,
                next_offset: self.get(r, 1, doing)?,
                sum: self.get(r, 2, doing)?,
            },
        })
    }

    /// The counter row.
    pub(super) async fn raw_counters(&self) -> Result<Option<(i64, i64, i64)>> {
        let doing = "verifying the counters";
        let rows = self.query(doing, &self.sql.bulk.verify_counters, &[&self.app_key.as_str()]).await?;
        rows.first()
            .map(|r| Ok((self.get(r, 0, doing)?, self.get(r, 1, doing)?, self.get(r, 2, doing)?)))
            .transpose()
    }
}
