//! `vellum verify URL --app KEY`: checks one application's whole store for damage (every
//! record's checksum, every index against the records in both directions, the counters, and
//! the storage engine's own check) and lists each problem with where it is. Nothing is
//! repaired. Exit status 1 when a problem was found (docs/verify.md).

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use vellum::verify::Report;
use vellum::{AnyProvider, BulkStore, DataStore, Error, ErrorKind, Provider, Result};

use crate::cli::VerifyArgs;
use crate::report::{Table, require_existing};

/// Runs the check and prints its report; a damaged store is an error (exit status 1) after
/// the report is printed.
pub async fn run(args: VerifyArgs) -> Result<()> {
    let provider = vellum::connect(&args.url)?;
    require_existing(&args.url, &provider, &args.app)?;
    let store = provider.open(&args.app).await?;
    let started = Instant::now();
    let result = verify(&store).await;
    let closed = store.close().await;
    let mut report = result?;
    closed?;
    engine_check(&provider, &args.app, &mut report)?;
    let elapsed = started.elapsed();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report_json(&args, &report)).unwrap_or_default());
    } else {
        let mut t = Table::new(["", ""]);
        t.row(["verified".to_owned(), format!("application {:?} at {}", args.app, args.url)]);
        t.row([
            "records".to_owned(),
            format!("{} intact (a damaged one is a problem below)", report.records),
        ]);
        t.row(["index entries".to_owned(), format!("{} checked against the records", report.index_entries)]);
        t.row([
            "engine check".to_owned(),
            report.engine_check.clone().unwrap_or_else(|| "none (this provider has none)".to_owned()),
        ]);
        t.row(["elapsed".to_owned(), format!("{:.2} s", elapsed.as_secs_f64())]);
        t.row(["problems".to_owned(), problems(&report)]);
        print!("{t}");
        for problem in &report.problems {
            println!("  {problem}");
        }
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(Error::storage_kind(
            ErrorKind::Corrupt,
            format!("the store of application {:?} at {} is damaged", args.app, args.url),
            format!("{} (see the report)", problems(&report)),
        ))
    }
}

/// Adds the storage engine's own check where it needs the file to itself: redb checks every
/// page's checksum on a scratch copy of the closed file (its check repairs, verify must not).
fn engine_check(provider: &AnyProvider, app: &str, report: &mut Report) -> Result<()> {
    if let AnyProvider::Redb(redb) = provider {
        report.problems.extend(redb.check_pages(app)?);
        report.engine_check =
            Some("redb check_integrity (every page checksum, on a copy of the file)".into());
    }
    Ok(())
}

/// Runs the provider's check under a progress bar on stderr (hidden when it is not a terminal).
async fn verify(store: &vellum::AnyStore) -> Result<Report> {
    // The bar's length is the record count; a store too damaged to count gets a spinner.
    let (bar, template) = match store.stats().await {
        Ok(stats) => {
            (ProgressBar::new(stats.total()), "{msg} [{bar:40}] {pos}/{len} records ({per_sec}, eta {eta})")
        }
        Err(_) => (ProgressBar::new_spinner(), "{msg} {spinner} {pos} records ({per_sec})"),
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("verifying {:?}", store.app_key()));
    let result = store.verify(&mut |checked| bar.set_position(checked)).await;
    bar.finish_and_clear();
    result
}

/// `none found`, `1 problem found`, `3 problems found`.
fn problems(report: &Report) -> String {
    match report.problems.len() {
        0 => "none found".to_owned(),
        1 => "1 problem found".to_owned(),
        n => format!("{n} problems found"),
    }
}

fn report_json(args: &VerifyArgs, report: &Report) -> Value {
    let problems: Vec<Value> =
        report.problems.iter().map(|p| json!({ "location": p.location, "what": p.what })).collect();
    json!({
        "url": args.url,
        "app_key": args.app,
        "clean": report.is_clean(),
        "records": report.records,
        "index_entries": report.index_entries,
        "engine_check": report.engine_check,
        "problems": problems,
    })
}

#[cfg(test)]
mod tests {
    use vellum::verify::Problem;

    use super::*;

    #[test]
    fn a_damaged_report_as_json() {
        let args = VerifyArgs { url: "redb://d".into(), app: "demo".into(), json: true };
        let report = Report {
            records: 9,
            index_entries: 20,
            problems: vec![Problem::new("event at offset 3", "checksum mismatch")],
            engine_check: Some("redb check_integrity".into()),
        };
        let value = report_json(&args, &report);
        assert_eq!(value["clean"], false);
        assert_eq!(value["problems"][0]["location"], "event at offset 3");
        assert_eq!(value["problems"][0]["what"], "checksum mismatch");
        assert_eq!(value["engine_check"], "redb check_integrity");
        assert_eq!(problems(&report), "1 problem found");
        assert_eq!(problems(&Report::default()), "none found");
    }
}
