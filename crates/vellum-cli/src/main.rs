//! `vellum`: the command-line tool (see `vellum --help`).

mod archive;
mod bench;
mod cli;
mod copy;
mod demo;
mod inspect;
mod report;
mod schema;
mod tail;
mod verify;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::cli::{Cli, Command};

/// jemalloc, not the platform's malloc: a cursor's pages are decoded on runtime workers and
/// freed by the reading task, and glibc's malloc spent about 38% of a 1M-event scan's CPU on
/// that cross-thread traffic (ARCHITECTURE.md, "The `vellum` binary's allocator").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Inspect(args) => inspect::run(args).await,
            Command::Tail(args) => tail::run(args).await,
            Command::Copy(args) => copy::run(args).await,
            Command::Export(args) => archive::export(args).await,
            Command::Import(args) => archive::import(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Schema(args) => schema::run(args).await,
            Command::Verify(args) => verify::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&report::chain(&e)),
    }
}

/// Prints one error line and returns the failure exit status.
fn fail(message: &str) -> ExitCode {
    eprintln!("vellum: error: {message}");
    ExitCode::FAILURE
}

/// `-v`: vellum's debug spans (opens, persists, commits); `-vv`: trace (queries); `RUST_LOG`
/// replaces either. Spans print when they close, with their duration.
fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "warn,vellum=debug",
        _ => "warn,vellum=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
