//! Values the dialects' own tests share.

use vellum_core::{Envelope, Identity};

/// An event envelope with a fixed source handler instance and a JSON payload.
pub(crate) fn event(id: &str, name: &str) -> Envelope {
    Envelope {
        message_id: id.into(),
        portable_name: name.into(),
        source_handler: Some(Identity::new("<handler>", "<handler-key>")),
        source_instance_id: "<instance>".into(),
        media_type: "application/json".into(),
        data: b"{}".to_vec(),
        ..Envelope::default()
    }
}
