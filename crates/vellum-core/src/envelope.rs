//! The Dogma interop envelope (`dogma.interop.v1.envelope.Envelope`), derived with prost.
//!
//! Field numbers follow interopspec v0.5.4 exactly, so the bytes a provider stores are
//! the bytes any other Dogma implementation reads. `source_site` is tag 13 although the `.proto`
//! declares it between tags 3 and 4; prost encodes in tag order, as protoc-generated code does.

/// An application or handler identity: a human-readable name and a stable key.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Identity {
    /// The identity's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The identity's unique key.
    #[prost(string, tag = "2")]
    pub key: String,
}

impl Identity {
    /// Builds an identity from a name and a key.
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Self {
        Self { name: name.into(), key: key.into() }
    }
}

/// A message and its meta-data, as exchanged between Dogma engines.
///
/// `Option<Identity>` keeps absent and empty identities apart; vellum stores the encoded
/// envelope, so both come back exactly as saved (docs/events.md#envelopes-are-stored-exactly).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Envelope {
    /// Unique message ID.
    #[prost(string, tag = "1")]
    pub message_id: String,
    /// ID of the message that directly caused this one.
    #[prost(string, tag = "2")]
    pub causation_id: String,
    /// ID of the root message of the causal chain.
    #[prost(string, tag = "3")]
    pub correlation_id: String,
    /// The application that produced the message.
    #[prost(message, optional, tag = "4")]
    pub source_application: Option<Identity>,
    /// The handler that produced the message, absent when no handler did.
    #[prost(message, optional, tag = "5")]
    pub source_handler: Option<Identity>,
    /// The aggregate or process instance that produced the message, empty otherwise.
    #[prost(string, tag = "6")]
    pub source_instance_id: String,
    /// Creation time, RFC 3339 with nanoseconds.
    #[prost(string, tag = "7")]
    pub created_at: String,
    /// Due time of a timeout message (RFC 3339); empty for commands and events.
    #[prost(string, tag = "8")]
    pub scheduled_for: String,
    /// Optional human-readable description.
    #[prost(string, tag = "9")]
    pub description: String,
    /// Portable name of the message type; the key of `load_events_by_type`.
    #[prost(string, tag = "10")]
    pub portable_name: String,
    /// MIME type of `data`.
    #[prost(string, tag = "11")]
    pub media_type: String,
    /// The encoded message.
    #[prost(bytes = "vec", tag = "12")]
    pub data: Vec<u8>,
    /// Site identity disambiguating installations of one application, if any.
    #[prost(message, optional, tag = "13")]
    pub source_site: Option<Identity>,
}

impl Envelope {
    /// The key of the handler that produced this message, or `""` when none did.
    #[must_use]
    pub fn source_handler_key(&self) -> &str {
        self.source_handler.as_ref().map_or("", |h| h.key.as_str())
    }

    /// Whether this message is a timeout: it has a non-empty `scheduled_for` (docs/queue.md#timeouts).
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        !self.scheduled_for.is_empty()
    }

    /// Encodes the envelope to protobuf bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }

    /// Decodes an envelope from protobuf bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        prost::Message::decode(bytes)
    }
}
