//! Verify's reads for MySQL/MariaDB (see `crate::verify`): raw row pages and the counter row.
//! The server's index structures are its own to check (`CHECK TABLE`), so this dialect feeds
//! no index entries; each row's index columns are checked against its envelope instead.

use mysql_async::{Row, Value};
use vellum_core::Result;

use super::bulk::SQL;
use super::reads::{MysqlReads, bytes};
use super::{get_bytes, get_i64, get_string, opt_string};
use crate::bulk::limit;
use crate::verify::{PAGE, RawRow, VerifyPage};

impl MysqlReads {
    /// One page of raw rows.
    pub(super) async fn raw_page(&self, page: &VerifyPage) -> Result<Vec<RawRow>> {
        let (app, n, sql) = (bytes(&self.app_key), Value::Int(limit(PAGE)), &*SQL);
        let pair = |h: &str, i: &str| sql.keyset(vec![bytes(h), bytes(i)]);
        let (statement, params): (&str, Vec<Value>) = match page {
            VerifyPage::Events(from) => (&sql.verify_events, vec![app, Value::Int(*from), n]),
            VerifyPage::Queue(None) => (&sql.verify_queue_first, vec![app, n]),
            VerifyPage::Queue(Some(id)) => (&sql.verify_queue_after, vec![app, bytes(id), n]),
            VerifyPage::Aggregates(None) => (&sql.aggregates_first, vec![app, n]),
            VerifyPage::Aggregates(Some((h, i))) => {
                (&sql.aggregates_after, [vec![app], pair(h, i), vec![n]].concat())
            }
            VerifyPage::Processes(None) => (&sql.processes_first, vec![app, n]),
            VerifyPage::Processes(Some((h, i))) => {
                (&sql.processes_after, [vec![app], pair(h, i), vec![n]].concat())
            }
            VerifyPage::Offsets(None) => (&sql.offsets_first, vec![app, n]),
            VerifyPage::Offsets(Some(source)) => (&sql.offsets_after, vec![app, bytes(source), n]),
        };
        let rows = self.rows("verifying rows", statement, params).await?;
        rows.into_iter().map(|row| raw_row(page, row)).collect()
    }

    /// The counter row.
    pub(super) async fn raw_counters(&self) -> Result<Option<(i64, i64, i64)>> {
        let rows =
            self.rows("verifying the counters", &SQL.verify_counters, vec![bytes(&self.app_key)]).await?;
        rows.into_iter()
            .next()
            .map(|mut r| Ok((get_i64(&mut r, 0)?, get_i64(&mut r, 1)?, get_i64(&mut r, 2)?)))
            .transpose()
    }
}

fn raw_row(page: &VerifyPage, mut r: Row) -> Result<RawRow> {
    let r = &mut r;
    Ok(match page {
        VerifyPage::Events(_) => RawRow::Event {
            offset: get_i64(r, 0)?,
            envelope: get_bytes(r, 1)?,
            sum: get_i64(r, 2)?,
            message_id: get_string(r, 3)?,
            portable_name: get_string(r, 4)?,
            handler_key: get_string(r, 5)?,
            instance_id: get_string(r, 6)?,
        },
        VerifyPage::Queue(_) => RawRow::Queue {
            message_id: get_string(r, 0)?,
            revision: get_i64(r, 1)?,
            failure_count: get_i64(r, 2)?,
            next_attempt_at: get_i64(r, 3)?,
            sequence: get_i64(r, 4)?,
            envelope: get_bytes(r, 5)?,
            envelope_sum: get_i64(r, 6)?,
            state_sum: get_i64(r, 7)?,
            timeout_owner: (opt_string(r, 8)?, opt_string(r, 9)?),
        },
        VerifyPage::Aggregates(_) => RawRow::Aggregate {
            handler_key: get_string(r, 0)?,
            instance_id: get_string(r, 1)?,
            revision: get_i64(r, 2)?,
            last_event_id: get_string(r, 3)?,
            sum: get_i64(r, 4)?,
        },
        VerifyPage::Processes(_) => RawRow::Process {
            handler_key: get_string(r, 0)?,
            instance_id: get_string(r, 1)?,
            revision: get_i64(r, 2)?,
            media_type: get_string(r, 3)?,
            data: get_bytes(r, 4)?,
            sum: get_i64(r, 5)?,
        },
        VerifyPage::Offsets(_) => {
            RawRow::Offset { source: get_string(r, 0)?, next_offset: get_i64(r, 1)?, sum: get_i64(r, 2)? }
        }
    })
}
