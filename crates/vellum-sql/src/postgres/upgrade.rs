//! Schema upgrades, run by `create_schema` inside its transaction (so a failed upgrade leaves
//! the schema as it was).
//!
//! 1 to 2 adds the checksum columns and fills them from each row's values, for every
//! application in the schema (docs/integrity.md). Rows are read and updated table by table; the
//! rows of one table are held in memory while it is filled, which is fine for the stores this
//! one-time upgrade meets, and is written down in docs/integrity.md.

use tokio_postgres::Client;

use super::sql;
use crate::schema::from_db;
use crate::sums::write as sum;

/// Adds and fills the checksum columns of schema version 2.
#[allow(clippy::too_many_lines)] // one read-and-update loop per table
pub(super) async fn add_checksums(client: &Client, s: &str) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&sql::add_checksum_columns(s)).await?;
    for row in
        client.query(&format!("SELECT app_key, next_offset, next_sequence FROM {s}.vellum_app"), &[]).await?
    {
        let (app, offset, sequence): (String, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let value = sum::counters(&app, from_db(offset), from_db(sequence));
        client
            .execute(&format!("UPDATE {s}.vellum_app SET checksum = $2 WHERE app_key = $1"), &[&app, &value])
            .await?;
    }
    let rows =
        client.query(&format!("SELECT app_key, event_offset, envelope FROM {s}.vellum_event"), &[]).await?;
    let update = client
        .prepare(&format!(
            "UPDATE {s}.vellum_event SET checksum = $3 WHERE app_key = $1 AND event_offset = $2"
        ))
        .await?;
    for row in rows {
        let (app, offset, envelope): (String, i64, &[u8]) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        client.execute(&update, &[&app, &offset, &sum::event(&app, from_db(offset), envelope)]).await?;
    }
    let rows = client
        .query(
            &format!(
                "SELECT app_key, handler_key, instance_id, revision, last_event_id FROM {s}.vellum_aggregate"
            ),
            &[],
        )
        .await?;
    for row in rows {
        let (app, h, i): (String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let (revision, last): (i64, String) = (row.try_get(3)?, row.try_get(4)?);
        let value = sum::aggregate(&app, &h, &i, from_db(revision), &last);
        client
            .execute(
                &format!(
                    "UPDATE {s}.vellum_aggregate SET checksum = $4 \
                     WHERE app_key = $1 AND handler_key = $2 AND instance_id = $3"
                ),
                &[&app, &h, &i, &value],
            )
            .await?;
    }
    let rows = client
        .query(
            &format!(
                "SELECT app_key, handler_key, instance_id, revision, media_type, data FROM {s}.vellum_process"
            ),
            &[],
        )
        .await?;
    for row in rows {
        let (app, h, i): (String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let (revision, media_type, data): (i64, String, &[u8]) =
            (row.try_get(3)?, row.try_get(4)?, row.try_get(5)?);
        let value = sum::process(&app, &h, &i, from_db(revision), &media_type, data);
        client
            .execute(
                &format!(
                    "UPDATE {s}.vellum_process SET checksum = $4 \
                     WHERE app_key = $1 AND handler_key = $2 AND instance_id = $3"
                ),
                &[&app, &h, &i, &value],
            )
            .await?;
    }
    let rows = client
        .query(
            &format!(
                "SELECT app_key, message_id, revision, failure_count, next_attempt_at, sequence, envelope \
                 FROM {s}.vellum_queue"
            ),
            &[],
        )
        .await?;
    for row in rows {
        let (app, id): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let (revision, failures, at, sequence): (i64, i64, i64, i64) =
            (row.try_get(2)?, row.try_get(3)?, row.try_get(4)?, row.try_get(5)?);
        let envelope: &[u8] = row.try_get(6)?;
        let envelope_sum = sum::queue_envelope(&app, &id, from_db(sequence), envelope);
        let state_sum = sum::queue_state(&app, &id, from_db(revision), from_db(failures), at);
        client
            .execute(
                &format!(
                    "UPDATE {s}.vellum_queue SET envelope_checksum = $3, state_checksum = $4 \
                     WHERE app_key = $1 AND message_id = $2"
                ),
                &[&app, &id, &envelope_sum, &state_sum],
            )
            .await?;
    }
    for row in client
        .query(&format!("SELECT app_key, source_app_key, next_offset FROM {s}.vellum_offset"), &[])
        .await?
    {
        let (app, source, next): (String, String, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let value = sum::offset(&app, &source, from_db(next));
        client
            .execute(
                &format!(
                    "UPDATE {s}.vellum_offset SET checksum = $3 WHERE app_key = $1 AND source_app_key = $2"
                ),
                &[&app, &source, &value],
            )
            .await?;
    }
    Ok(())
}
