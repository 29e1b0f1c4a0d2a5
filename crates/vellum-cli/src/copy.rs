//! `vellum copy SRC DST --app KEY`: one application's whole store to an empty store of any
//! provider, streamed a page at a time, then verified (counts and checksum).

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use vellum::bulk::{self, BulkStore};
use vellum::{DataStore, Provider, Result};

use crate::cli::CopyArgs;
use crate::report::{Table, rate, require_existing};

/// Runs the copy and prints what it moved.
pub async fn run(args: CopyArgs) -> Result<()> {
    let (from, to) = (vellum::connect(&args.source)?, vellum::connect(&args.destination)?);
    require_existing(&args.source, &from, &args.app)?;
    let source = from.open(&args.app).await?;
    let destination = match to.open(&args.app).await {
        Ok(store) => store,
        Err(e) => {
            let _ = source.close().await;
            return Err(e);
        }
    };
    let started = Instant::now();
    let result = copy(&source, &destination, &args).await;
    let elapsed = started.elapsed();
    let closed = (source.close().await, destination.close().await);
    let summary = result?;
    closed.0?;
    closed.1?;
    let s = summary.stats;
    let mut t = Table::new(["", ""]);
    t.row([
        "copied".to_owned(),
        format!("application {:?}: {} -> {}", args.app, args.source, args.destination),
    ]);
    t.row([
        "records".to_owned(),
        format!(
            "{} ({} events, {} aggregates, {} processes, {} queued, {} offsets)",
            s.total(),
            s.events,
            s.aggregates,
            s.processes,
            s.queue,
            s.offsets
        ),
    ]);
    t.row(["verified".to_owned(), format!("counts equal, checksum {} equal", summary.digest.hex())]);
    t.row([
        "elapsed".to_owned(),
        format!("{:.2} s ({:.0} records/s)", elapsed.as_secs_f64(), rate(s.total(), elapsed)),
    ]);
    print!("{t}");
    Ok(())
}

async fn copy(
    source: &vellum::AnyStore,
    destination: &vellum::AnyStore,
    args: &CopyArgs,
) -> Result<bulk::CopySummary> {
    let total = source.stats().await?.total();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} records ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("copying {:?}", source.app_key()));
    let result = bulk::copy(source, destination, args.page_size, |done| bar.set_position(done)).await;
    bar.finish_and_clear();
    result
}
