//! Output helpers shared by the subcommands: error chains, tables, latency percentiles, sizes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vellum::AnyProvider;

/// An error and its sources as one line: `outer: inner: root` (line breaks some database
/// errors carry become spaces).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        // Drivers often repeat a source's text in their own, or extend it; say each thing once.
        if !parts.iter().any(|p| p.contains(&text)) {
            if parts.last().is_some_and(|last| text.contains(last.as_str())) {
                parts.pop();
            }
            parts.push(text);
        }
        source = e.source();
    }
    // Some drivers nest the same words in their own text ("Input/output error: Input/output
    // error: …"): drop a segment that repeats the one before it.
    let mut segments: Vec<&str> = Vec::new();
    let joined = parts.join(": ");
    for segment in joined.split(": ") {
        if segments.last() != Some(&segment) {
            segments.push(segment);
        }
    }
    segments.join(": ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A plain-text table with left-aligned columns.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(header: I) -> Self {
        Self { header: header.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    /// Adds a row.
    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header = self.header.iter().any(|h| !h.is_empty()).then_some(&self.header);
        for row in header.into_iter().chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Latency samples, summarised as percentiles.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds one sample.
    pub fn add(&mut self, sample: Duration) {
        self.0.push(sample);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `percent`-th percentile (0-100), nearest rank; zero without samples.
    pub fn percentile(&mut self, percent: usize) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.sort_unstable();
        let rank = (self.0.len() * percent.min(100)).div_ceil(100);
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
}

/// A duration as milliseconds with three decimals.
pub fn millis(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// A rate per second (for display: precision beyond 2^52 does not matter).
#[allow(clippy::cast_precision_loss)]
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() { 0.0 } else { count as f64 / elapsed.as_secs_f64() }
}

/// A byte count in binary units (for display).
#[allow(clippy::cast_precision_loss)]
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The file a file-based store lives in: the application's redb file, or the SQLite
/// database. `None` for memory and servers.
fn store_file(provider: &AnyProvider, app_key: &str) -> Option<PathBuf> {
    match provider {
        AnyProvider::Redb(p) => Some(p.file_path(app_key)),
        AnyProvider::Sqlite(p) => p.path().map(Path::to_owned),
        _ => None,
    }
}

/// The bytes a store occupies on local disk (for SQLite, with its WAL); `None` for memory and
/// servers.
pub fn store_size(provider: &AnyProvider, app_key: &str) -> Option<u64> {
    let file = store_file(provider, app_key)?;
    let mut wal = file.clone().into_os_string();
    wal.push("-wal");
    let wal = if matches!(provider, AnyProvider::Sqlite(_)) { file_len(Path::new(&wal)) } else { None };
    Some(file_len(&file)? + wal.unwrap_or(0))
}

/// Refuses to read a file-based store that does not exist yet: opening would create an empty
/// one, so a mistyped application key or path would read as an empty store.
pub fn require_existing(url: &str, provider: &AnyProvider, app_key: &str) -> vellum::Result<()> {
    match store_file(provider, app_key) {
        Some(path) if !path.exists() => Err(vellum::Error::storage(
            format!("there is no store for application {app_key:?} at {url}"),
            format!("{} does not exist", path.display()),
        )),
        _ => Ok(()),
    }
}

fn file_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn error_chains_say_each_thing_once_on_one_line() {
        let root = Layer("Connection refused\n(os error 111)", None);
        let io = Layer("Input/output error", Some(Box::new(root)));
        let repeated = Layer("Input/output error", Some(Box::new(io)));
        let top = Layer("mysql: opening", Some(Box::new(repeated)));
        assert_eq!(chain(&top), "mysql: opening: Input/output error: Connection refused (os error 111)");
        let nested = Layer("Input/output error: Input/output error: refused", None);
        assert_eq!(chain(&Layer("mysql", Some(Box::new(nested)))), "mysql: Input/output error: refused");
        let extended = Layer("Input/output error: Connection refused", None);
        let top =
            Layer("mysql: opening", Some(Box::new(Layer("Input/output error", Some(Box::new(extended))))));
        assert_eq!(chain(&top), "mysql: opening: Input/output error: Connection refused");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.add(Duration::from_millis(ms));
        }
        assert_eq!(l.percentile(50), Duration::from_millis(50));
        assert_eq!(l.percentile(99), Duration::from_millis(99));
        assert_eq!(l.percentile(100), Duration::from_millis(100));
        assert_eq!(Latencies::default().percentile(50), Duration::ZERO);
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(["a", "long header", "c"]);
        t.row(["xyz", "1", "end"]);
        assert_eq!(t.to_string(), "a    long header  c\nxyz  1            end\n");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
