//! `vellum schema create|drop|status URL`: vellum's schema in a SQL database.

use vellum::{AnyProvider, Result};

use crate::cli::{SchemaAction, SchemaArgs};

/// Runs the schema action and prints what it did or found.
pub async fn run(args: SchemaArgs) -> Result<()> {
    let (url, action) = match &args.action {
        SchemaAction::Create { url } => (url, "create"),
        SchemaAction::Drop { url } => (url, "drop"),
        SchemaAction::Status { url } => (url, "status"),
    };
    let provider = vellum::connect(url)?;
    let expected = vellum::sql::SCHEMA_VERSION;
    match action {
        "create" => {
            provider.create_schema().await?;
            println!("vellum schema version {expected} is in place at {url}");
        }
        "drop" => {
            provider.drop_schema().await?;
            println!("vellum schema dropped from {url} (if it was there)");
        }
        _ => match provider.schema_version().await? {
            Some(v) if v == expected => println!("{url}: vellum schema version {v} (current)"),
            Some(v) if v < expected => {
                println!("{url}: vellum schema version {v}; version {expected} is applied on the next open");
            }
            Some(v) => println!("{url}: vellum schema version {v}, newer than this vellum ({expected})"),
            None => println!("{url}: no vellum schema (run `vellum schema create {url}`)"),
        },
    }
    disconnect(provider).await
}

async fn disconnect(provider: AnyProvider) -> Result<()> {
    match provider {
        AnyProvider::Mysql(p) => p.disconnect().await,
        _ => Ok(()),
    }
}
