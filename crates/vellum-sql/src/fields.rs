//! The strings a batch stores in text or key columns, named as an error should name them. Each
//! dialect checks them against its own limits before a batch is queued (MySQL: key length;
//! PostgreSQL: NUL characters), so a refused batch names the field and writes nothing.

use vellum_core::Operation;

/// One stored string of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    /// What the field is, for errors ("instance ID").
    pub(crate) name: &'static str,
    /// Its value.
    pub(crate) value: &'a str,
    /// Whether it is stored in a key (indexed) column.
    pub(crate) key: bool,
}

const fn key<'a>(name: &'static str, value: &'a str) -> Field<'a> {
    Field { name, value, key: true }
}

const fn text<'a>(name: &'static str, value: &'a str) -> Field<'a> {
    Field { name, value, key: false }
}

/// Every string `op` stores outside an encoded envelope.
pub(crate) fn stored_strings(op: &Operation) -> Vec<Field<'_>> {
    match op {
        Operation::SaveAggregateMetaData(m) => vec![
            key("handler key", &m.handler_key),
            key("instance ID", &m.instance_id),
            text("last event ID", &m.last_event_id),
        ],
        Operation::SaveProcessInstance(p) => vec![
            key("handler key", &p.handler_key),
            key("instance ID", &p.instance_id),
            text("media type", &p.packet.media_type),
        ],
        Operation::RemoveProcessInstance(p) => {
            vec![key("handler key", &p.handler_key), key("instance ID", &p.instance_id)]
        }
        Operation::SaveEvent(e) => vec![
            key("message ID", &e.message_id),
            key("portable name", &e.portable_name),
            key("source handler key", e.source_handler_key()),
            key("source instance ID", &e.source_instance_id),
        ],
        Operation::SaveQueueMessage(m) | Operation::RemoveQueueMessage(m) => {
            let mut fields = vec![key("message ID", m.id())];
            if m.envelope.is_timeout() {
                fields.extend([
                    key("source handler key", m.envelope.source_handler_key()),
                    key("source instance ID", &m.envelope.source_instance_id),
                ]);
            }
            fields
        }
        Operation::SaveOffset { application_key, .. } => vec![key("application key", application_key)],
    }
}
