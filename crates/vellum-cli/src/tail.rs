//! `vellum tail`: an application's events as they are committed, printed by a follower of a
//! reader (docs/events.md#reading-beside-the-engine), so it runs beside the engine that holds
//! the store.

use serde_json::json;
use vellum::{Error, Event, EventReader, EventRepository, Follower, Provider, Result};

use crate::cli::TailArgs;
use crate::inspect::envelope_json;

/// Runs `vellum tail` until Ctrl-C (exit 0), the reader closes, or stdout goes away.
pub async fn run(args: TailArgs) -> Result<()> {
    let provider = vellum::connect(&args.url)?;
    let reader = provider.open_reader(&args.app).await?;
    let result = follow(&reader, &args).await;
    let closed = reader.close().await;
    result?;
    // A reader closed underneath (it cannot be here) says so; anything else is an error.
    match closed {
        Ok(()) | Err(Error::Closed) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Prints what the follower yields until interrupted.
async fn follow(reader: &vellum::AnyReader, args: &TailArgs) -> Result<()> {
    let from = if args.from_end { reader.next_event_offset().await? } else { args.from };
    let mut follower = follower(reader, args, from).await?.with_poll_cap(args.poll_cap);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut out = std::io::stdout().lock();
    loop {
        let event = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            event = follower.next() => event,
        };
        match event {
            // By source the query starts at offset 0.
            Ok(event) if event.offset < from => {}
            Ok(event) => {
                if print(&mut out, &event, args.json).is_err() {
                    return Ok(()); // stdout closed (`vellum tail | head`): done
                }
            }
            Err(Error::Closed) => return Ok(()),
            // The follower pauses before its next look; the server may be restarting.
            Err(e) if e.is_retryable() => eprintln!("vellum tail: {}; retrying", crate::report::chain(&e)),
            Err(e) => return Err(e),
        }
    }
}

/// The follower the arguments ask for, from offset `from`.
async fn follower(reader: &vellum::AnyReader, args: &TailArgs, from: u64) -> Result<Follower> {
    // clap gives --source exactly two values.
    let cursor = match (args.source.as_deref(), args.types.is_empty()) {
        (Some([handler, instance]), _) => reader.load_events_by_source(handler, instance).await?,
        (_, true) => reader.load_all_events(from).await?,
        (_, false) => {
            let names: Vec<&str> = args.types.iter().map(String::as_str).collect();
            reader.load_events_by_type(&names, from).await?
        }
    };
    Ok(cursor.follow())
}

/// One line per event, flushed at once (a pipe reader sees each event as it comes).
fn print(out: &mut impl std::io::Write, event: &Event, json: bool) -> std::io::Result<()> {
    let e = &event.envelope;
    if json {
        let line = json!({ "offset": event.offset, "envelope": envelope_json(e) });
        writeln!(out, "{line}")?;
    } else {
        let source = format!("{}/{}", e.source_handler_key(), e.source_instance_id);
        let data = String::from_utf8_lossy(&e.data);
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            event.offset, e.created_at, e.portable_name, e.message_id, source, data
        )?;
    }
    out.flush()
}
