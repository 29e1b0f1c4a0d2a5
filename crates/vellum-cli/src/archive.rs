//! `vellum export URL --app KEY -o FILE` and `vellum import FILE URL --app KEY`: one
//! application's whole store to an archive file and back (`vellum::bulk::archive`,
//! docs/archive.md), with a progress bar and a summary.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use vellum::bulk::archive::{self, ArchiveSummary, Phase};
use vellum::bulk::{BulkStore, StoreStats};
use vellum::{DataStore, Error, ErrorKind, Provider, Result};

use crate::cli::{ExportArgs, ImportArgs};
use crate::report::{Table, bytes, rate, require_existing};

/// Writes the archive and prints what it holds: on stdout, or on stderr when the archive
/// itself goes to stdout.
pub async fn export(args: ExportArgs) -> Result<()> {
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(Error::storage_kind(
            ErrorKind::InvalidInput,
            "writing an archive to stdout",
            "stdout is a terminal: redirect it to a file or a pipe, or give -o FILE",
        ));
    }
    let provider = vellum::connect(&args.url)?;
    require_existing(&args.url, &provider, &args.app)?;
    let store = provider.open(&args.app).await?;
    let started = Instant::now();
    let result = if to_stdout {
        let stdout = std::io::stdout().lock();
        write_archive(&store, provider.kind(), BufWriter::new(stdout), &args).await
    } else {
        export_to_file(&store, provider.kind(), &args.output, &args).await
    };
    let elapsed = started.elapsed();
    let closed = store.close().await;
    let summary = result?;
    closed?;
    let name = if to_stdout { "stdout".to_owned() } else { args.output.display().to_string() };
    let mut t = Table::new(["", ""]);
    t.row(["exported".to_owned(), format!("application {:?}: {} -> {name}", args.app, args.url)]);
    summary_rows(&mut t, &summary, elapsed);
    if to_stdout {
        eprint!("{t}");
    } else {
        print!("{t}");
    }
    Ok(())
}

/// Exports into a temporary file beside `path`, made durable and then renamed over `path`:
/// a failed export leaves no file, and never a damaged one in place of a good one.
async fn export_to_file(
    store: &vellum::AnyStore,
    origin: &str,
    path: &Path,
    args: &ExportArgs,
) -> Result<ArchiveSummary> {
    let io = |what: &str, e: std::io::Error| Error::storage(format!("{what} {}", path.display()), e);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| io("creating a file beside", e))?;
    let summary = write_archive(store, origin, BufWriter::new(&mut file), args).await?;
    file.as_file().sync_all().map_err(|e| io("writing", e))?;
    file.persist(path).map_err(|e| io("writing", e.error))?;
    Ok(summary)
}

async fn write_archive(
    store: &vellum::AnyStore,
    origin: &str,
    mut out: impl Write,
    args: &ExportArgs,
) -> Result<ArchiveSummary> {
    let bar = progress_bar(store.stats().await?.total());
    bar.set_message(format!("exporting {:?}", store.app_key()));
    let result = archive::export_with_origin(store, origin, &mut out, args.page_size, |done| {
        bar.set_position(done);
    })
    .await;
    bar.finish_and_clear();
    let summary = result?;
    out.flush().map_err(|e| Error::storage("writing the archive", e))?;
    Ok(summary)
}

/// Restores the archive into an empty store and prints what it moved.
pub async fn import(args: ImportArgs) -> Result<()> {
    let from_stdin = args.file.as_os_str() == "-";
    let name = if from_stdin { "stdin".to_owned() } else { args.file.display().to_string() };
    let named = |e: Error| match e.kind() {
        ErrorKind::Corrupt | ErrorKind::Misconfigured => {
            Error::storage_kind(e.kind(), format!("reading archive {name}"), e)
        }
        _ => e,
    };
    let mut file = if from_stdin { buffer_stdin()? } else { open(&args.file)? };
    // The header first: a wrong application is refused before the destination store is created.
    let header = archive::read_header(BufReader::new(&mut file)).map_err(named)?;
    if header.app_key != args.app {
        return Err(Error::storage_kind(
            ErrorKind::InvalidInput,
            format!("importing {name} into application {:?}", args.app),
            format!("the archive holds application {:?}", header.app_key),
        ));
    }
    file.rewind().map_err(|e| Error::storage(format!("reading archive {name}"), e))?;

    let provider = vellum::connect(&args.url)?;
    let store = provider.open(&args.app).await?;
    let started = Instant::now();
    let bar = progress_bar(header.stats.total());
    bar.set_message(format!("checking {name}"));
    let mut phase = Phase::Verifying;
    let result =
        archive::import(BufReader::new(&mut file), &store, &args.app, args.page_size, |now, done| {
            if now != phase {
                phase = now;
                bar.set_message(format!("importing into {:?}", args.app));
            }
            bar.set_position(done);
        })
        .await;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let closed = store.close().await;
    let summary = result.map_err(named)?;
    closed?;
    let mut t = Table::new(["", ""]);
    t.row(["imported".to_owned(), format!("application {:?}: {name} -> {}", args.app, args.url)]);
    summary_rows(&mut t, &summary, elapsed);
    t.row(["verified".to_owned(), "counts equal, checksum equal".to_owned()]);
    print!("{t}");
    Ok(())
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::storage(format!("opening archive {}", path.display()), e))
}

/// Copies stdin to an anonymous temporary file (deleted when closed): the import reads the
/// archive twice.
fn buffer_stdin() -> Result<File> {
    let io = |e| Error::storage("buffering the archive from stdin in a temporary file", e);
    let mut file = tempfile::tempfile().map_err(io)?;
    std::io::copy(&mut std::io::stdin().lock(), &mut file).map_err(io)?;
    file.rewind().map_err(io)?;
    Ok(file)
}

/// The rows both commands print: records, archive size and checksum, time taken.
fn summary_rows(t: &mut Table, summary: &ArchiveSummary, elapsed: Duration) {
    let s = summary.header.stats;
    t.row(["records".to_owned(), records(&s)]);
    t.row([
        "archive".to_owned(),
        format!("{} ({} bytes), checksum {}", bytes(summary.bytes), summary.bytes, summary.digest.hex()),
    ]);
    t.row([
        "elapsed".to_owned(),
        format!("{:.2} s ({:.0} records/s)", elapsed.as_secs_f64(), rate(s.total(), elapsed)),
    ]);
}

fn records(s: &StoreStats) -> String {
    format!(
        "{} ({} events, {} aggregates, {} processes, {} queued, {} offsets)",
        s.total(),
        s.events,
        s.aggregates,
        s.processes,
        s.queue,
        s.offsets
    )
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} records ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}
