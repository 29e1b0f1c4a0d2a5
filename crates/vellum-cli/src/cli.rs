//! The command line: every subcommand, flag and its help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The default store: the embedded redb provider in `./vellum-data`.
pub const DEFAULT_URL: &str = "redb://vellum-data";

/// vellum: persistence for message-driven engines. Run a demo workload, look inside a store,
/// copy a store between providers, benchmark providers, manage SQL schemas.
#[derive(Debug, Parser)]
#[command(name = "vellum", version, propagate_version = true)]
pub struct Cli {
    /// Show vellum's tracing spans on stderr: -v for opens, persists and commits (debug),
    /// -vv for queries too (trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an engine-shaped workload (aggregates, events, a process with timeouts, a queue with
    /// failures and retries, a consumer advancing its offset) and print a summary.
    Demo(DemoArgs),
    /// Look inside one application's store.
    Inspect(InspectArgs),
    /// Print an application's events as they are committed, like `tail -f`, beside the engine
    /// that writes them (no lock taken), until interrupted (Ctrl-C exits 0).
    Tail(TailArgs),
    /// Copy one application's whole store to an empty store of any provider, then verify it.
    Copy(CopyArgs),
    /// Write one application's whole store to an archive file (a checksummed backup).
    Export(ExportArgs),
    /// Restore an archive file into an empty store of any provider, then verify it.
    Import(ImportArgs),
    /// Measure the standard workloads on one or more providers.
    Bench(BenchArgs),
    /// Create, drop or report vellum's schema in a SQL database.
    Schema(SchemaArgs),
    /// Check one application's whole store for damage: record checksums, indexes against
    /// records, counters, and the storage engine's own check. Exit status 1 if damaged.
    Verify(VerifyArgs),
}

/// Which store: a URL and an application key.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// The store URL: `memory:`, `redb://DIR`, `sqlite://FILE`, `postgres://…`, `mysql://…`
    #[arg(long, env = "VELLUM_URL", default_value = DEFAULT_URL)]
    pub url: String,

    /// The application key whose store to use.
    #[arg(long, env = "VELLUM_APP", default_value = "demo")]
    pub app: String,
}

/// `vellum demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to run it.
    #[command(flatten)]
    pub target: Target,

    /// How many commands to handle.
    #[arg(long, default_value_t = 2000)]
    pub commands: u64,

    /// How many handlers run concurrently (concurrent persists share commits).
    #[arg(long, default_value_t = 16)]
    pub workers: usize,

    /// How many aggregate instances the commands are spread over (fewer: more conflicts).
    #[arg(long, default_value_t = 50)]
    pub accounts: u64,
}

/// `vellum inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Which store.
    #[command(flatten)]
    pub target: Target,

    /// Print JSON (one document) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to show.
    #[command(subcommand)]
    pub what: Inspect,
}

/// What `vellum inspect` shows.
#[derive(Debug, Subcommand)]
pub enum Inspect {
    /// Events: all, by type (--type, repeatable), by source (--source HANDLER INSTANCE).
    Events {
        /// Only events of this portable type name; repeat for several.
        #[arg(long = "type", value_name = "NAME")]
        types: Vec<String>,
        /// Only events produced by this handler instance.
        #[arg(long, num_args = 2, value_names = ["HANDLER_KEY", "INSTANCE_ID"], conflicts_with = "types")]
        source: Option<Vec<String>>,
        /// The first offset to show.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Show offsets below this one only.
        #[arg(long)]
        to: Option<u64>,
        /// At most this many events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// The head of the queue, earliest first, with whether each message is due.
    Queue {
        /// At most this many messages.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One process instance.
    Process {
        /// The process handler's key.
        handler_key: String,
        /// The instance ID.
        instance_id: String,
    },
    /// One aggregate instance's meta-data.
    Aggregate {
        /// The aggregate handler's key.
        handler_key: String,
        /// The instance ID.
        instance_id: String,
    },
    /// Every stored consumer offset.
    Offsets,
    /// Record counts, store size, and (with --checksum) the checksum `vellum copy` verifies.
    Stats {
        /// Also read the whole store to compute its checksum.
        #[arg(long)]
        checksum: bool,
    },
}

/// `vellum tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The store URL: `redb://DIR`, `sqlite://FILE`, `postgres://…`, `mysql://…`
    #[arg(env = "VELLUM_URL", default_value = DEFAULT_URL)]
    pub url: String,

    /// The application key whose events to print.
    #[arg(long, env = "VELLUM_APP", default_value = "demo")]
    pub app: String,

    /// Only events of this portable type name; repeat for several (default: every event).
    #[arg(long = "type", value_name = "NAME")]
    pub types: Vec<String>,

    /// Only events produced by this handler instance.
    #[arg(long, num_args = 2, value_names = ["HANDLER_KEY", "INSTANCE_ID"], conflicts_with = "types")]
    pub source: Option<Vec<String>>,

    /// The first offset to print.
    #[arg(long, default_value_t = 0, conflicts_with = "from_end")]
    pub from: u64,

    /// Print only events committed from now on.
    #[arg(long)]
    pub from_end: bool,

    /// Print one JSON object per line instead of a line of text.
    #[arg(long)]
    pub json: bool,

    /// Longest wait, in seconds, between two looks at a store that cannot push its commits
    /// (redb, SQLite, MySQL; PostgreSQL pushes with NOTIFY).
    #[arg(long, default_value = "1", value_parser = positive_seconds)]
    pub poll_cap: Duration,
}

/// `vellum copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The source store URL.
    pub source: String,
    /// The destination store URL; its store for the application must be empty.
    pub destination: String,
    /// The application key to copy.
    #[arg(long, env = "VELLUM_APP")]
    pub app: String,
    /// Records per page (one import transaction each).
    #[arg(long, default_value_t = 1000)]
    pub page_size: usize,
}

/// `vellum export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The store URL to export.
    pub url: String,
    /// The application key to export.
    #[arg(long, env = "VELLUM_APP")]
    pub app: String,
    /// The archive file to write, replaced only once the archive is complete; `-` for stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Records per page read from the store.
    #[arg(long, default_value_t = 1000)]
    pub page_size: usize,
}

/// `vellum import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The archive file to read; `-` for stdin (copied to a temporary file first, as the archive
    /// is read twice: checked whole, then imported).
    pub file: PathBuf,
    /// The destination store URL; its store for the application must be empty.
    pub url: String,
    /// The application key to restore; the archive must hold this application.
    #[arg(long, env = "VELLUM_APP")]
    pub app: String,
    /// Records per import transaction.
    #[arg(long, default_value_t = 1000)]
    pub page_size: usize,
}

/// `vellum bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The store URL to measure (ignored when --compare is given).
    #[arg(long, env = "VELLUM_URL", default_value = DEFAULT_URL)]
    pub url: String,

    /// Measure these URLs one after another in this run and print them side by side.
    #[arg(long, num_args = 1.., value_name = "URL")]
    pub compare: Vec<String>,

    /// Seconds per workload (fractions allowed).
    #[arg(long, default_value = "3", value_parser = positive_seconds)]
    pub duration: Duration,

    /// Concurrent writers in the concurrent persist workload.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,

    /// Also run the scan workload over a fresh log of this many events (filled first, 1,000
    /// per batch).
    #[arg(long, value_name = "EVENTS")]
    pub scan: Option<u64>,

    /// Directory whose disk's durable-sync rate is measured for context (default: the redb or
    /// SQLite location of the first URL, else the current directory).
    #[arg(long)]
    pub sync_dir: Option<PathBuf>,
}

/// `vellum schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: SchemaAction,
}

/// What `vellum schema` does.
#[derive(Debug, Subcommand)]
pub enum SchemaAction {
    /// Create vellum's tables if missing (idempotent).
    Create {
        /// A `sqlite://`, `postgres://` or `mysql://` URL.
        url: String,
    },
    /// Drop vellum's tables with all their data.
    Drop {
        /// A `sqlite://`, `postgres://` or `mysql://` URL.
        url: String,
    },
    /// Print the schema version found, or that there is none.
    Status {
        /// A `sqlite://`, `postgres://` or `mysql://` URL.
        url: String,
    },
}

/// `vellum verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The store URL to check.
    pub url: String,
    /// The application key whose store to check.
    #[arg(long, env = "VELLUM_APP")]
    pub app: String,
    /// Print the report as JSON (one document) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Parses a positive number of seconds.
fn positive_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}
