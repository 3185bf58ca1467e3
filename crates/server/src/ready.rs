//! Readiness (`/readyz`): a list of named checks, run together at each request. The store's
//! probe ([`resumable_core::Store::probe`]) is always one; the server adds the data
//! directory's ([`DirWritable`], [`FreeSpace`]), and a fleet backend can add its own (Redis
//! answers, the S3 bucket is reachable) by implementing [`Check`].

use async_trait::async_trait;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// One condition the server needs to take uploads.
#[async_trait]
pub trait Check: Send + Sync + 'static {
    /// A short name, for logs: `store`, `data_dir_writable`, `free_space`, ….
    fn name(&self) -> &str;

    /// `Ok` when the condition holds, else why not, as a sentence for the operator (the
    /// reason `/readyz` answers).
    async fn check(&self) -> Result<(), String>;
}

/// The checks `/readyz` runs besides the store's probe.
#[derive(Clone, Default)]
pub struct Checks(Vec<Arc<dyn Check>>);

impl Checks {
    /// No checks.
    pub fn new() -> Self {
        Checks::default()
    }

    /// These checks and `check`.
    pub fn with(mut self, check: impl Check) -> Self {
        self.0.push(Arc::new(check));
        self
    }

    /// Every check, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Check>> {
        self.0.iter()
    }
}

impl fmt::Debug for Checks {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_list()
            .entries(self.0.iter().map(|check| check.name()))
            .finish()
    }
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Whether every check passed.
    pub ready: bool,
    /// Why not, one sentence per failed check.
    pub reasons: Vec<String>,
    /// The checks that ran, by name.
    pub checks: Vec<String>,
}

/// Runs `checks` at once, each bounded by [`CHECK_TIMEOUT`].
pub(crate) async fn run(checks: impl Iterator<Item = &Arc<dyn Check>>) -> Report {
    let checks: Vec<&Arc<dyn Check>> = checks.collect();
    let outcomes = futures_util::future::join_all(checks.iter().map(|check| async move {
        match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "{}: no answer within {CHECK_TIMEOUT:?}",
                check.name()
            )),
        }
    }))
    .await;
    let reasons: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
    Report {
        ready: reasons.is_empty(),
        reasons,
        checks: checks.iter().map(|check| check.name().to_owned()).collect(),
    }
}

/// The store answers ([`resumable_core::UploadService::probe_store`]).
pub(crate) struct StoreAnswers(pub(crate) Arc<resumable_core::UploadService>);

#[async_trait]
impl Check for StoreAnswers {
    fn name(&self) -> &str {
        "store"
    }

    async fn check(&self) -> Result<(), String> {
        self.0
            .probe_store()
            .await
            .map_err(|error| format!("store not answering: {error}"))
    }
}

/// A file can be created, synced and removed in a directory: creates `.readyz-probe` there,
/// writes a byte, `fsync`s it and removes it. Probes run one at a time.
pub struct DirWritable {
    dir: PathBuf,
    one_at_a_time: tokio::sync::Mutex<()>,
}

/// The file [`DirWritable`] creates and removes (a crash between leaves it; the next probe
/// reuses it).
pub const PROBE_FILE: &str = ".readyz-probe";

impl DirWritable {
    /// Checks `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirWritable {
            dir: dir.into(),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }
}

#[async_trait]
impl Check for DirWritable {
    fn name(&self) -> &str {
        "data_dir_writable"
    }

    async fn check(&self) -> Result<(), String> {
        let _one = self.one_at_a_time.lock().await;
        let path = self.dir.join(PROBE_FILE);
        let probed = tokio::task::spawn_blocking(move || probe_write(&path)).await;
        match probed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!(
                "data dir not writable: {}: {error}",
                self.dir.display()
            )),
            Err(error) => Err(format!("data dir not writable: probe failed: {error}")),
        }
    }
}

fn probe_write(path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(b"1")?;
    file.sync_all()?;
    drop(file);
    std::fs::remove_file(path)
}

/// The least free space a data directory must have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFreeSpace {
    /// This many bytes available.
    Bytes(u64),
    /// This percentage of the file system's size available.
    Percent(f64),
}

impl MinFreeSpace {
    /// The bytes this asks for on a file system of `total` bytes.
    pub fn bytes_of(self, total: u64) -> u64 {
        match self {
            MinFreeSpace::Bytes(bytes) => bytes,
            MinFreeSpace::Percent(percent) => (total as f64 * percent / 100.0).ceil() as u64,
        }
    }
}

impl fmt::Display for MinFreeSpace {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MinFreeSpace::Bytes(bytes) => write!(formatter, "{bytes} bytes"),
            MinFreeSpace::Percent(percent) => write!(formatter, "{percent}%"),
        }
    }
}

/// The file system of a directory has at least some space available (to unprivileged users:
/// `statvfs`'s `f_bavail`).
pub struct FreeSpace {
    dir: PathBuf,
    min: MinFreeSpace,
}

impl FreeSpace {
    /// Checks that `dir`'s file system has `min` available.
    pub fn new(dir: impl Into<PathBuf>, min: MinFreeSpace) -> Self {
        FreeSpace {
            dir: dir.into(),
            min,
        }
    }
}

/// Bytes (available, total) on the file system holding `dir`.
pub fn space_of(dir: &Path) -> std::io::Result<(u64, u64)> {
    let stats = rustix::fs::statvfs(dir)?;
    let unit = stats.f_frsize;
    Ok((
        stats.f_bavail.saturating_mul(unit),
        stats.f_blocks.saturating_mul(unit),
    ))
}

#[async_trait]
impl Check for FreeSpace {
    fn name(&self) -> &str {
        "free_space"
    }

    async fn check(&self) -> Result<(), String> {
        let dir = self.dir.clone();
        let space = tokio::task::spawn_blocking(move || space_of(&dir))
            .await
            .map_err(|error| format!("free space unknown: {error}"))?;
        let (available, total) = space
            .map_err(|error| format!("free space unknown: {}: {error}", self.dir.display()))?;
        let needed = self.min.bytes_of(total);
        if available < needed {
            return Err(format!(
                "free space low: {available} bytes available in {}, below the minimum of {} ({needed} bytes)",
                self.dir.display(),
                self.min
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_of_the_file_systems_size() {
        assert_eq!(MinFreeSpace::Percent(1.0).bytes_of(1000), 10);
        assert_eq!(MinFreeSpace::Percent(0.5).bytes_of(1001), 6);
        assert_eq!(MinFreeSpace::Bytes(7).bytes_of(1000), 7);
    }

    #[tokio::test]
    async fn checks_report_every_failure_by_reason() {
        let dir = tempfile::tempdir().unwrap();
        let ok = Checks::new()
            .with(DirWritable::new(dir.path()))
            .with(FreeSpace::new(dir.path(), MinFreeSpace::Bytes(0)));
        let report = run(ok.iter()).await;
        assert_eq!(
            report,
            Report {
                ready: true,
                reasons: vec![],
                checks: vec!["data_dir_writable".into(), "free_space".into()],
            }
        );
        assert!(
            !dir.path().join(PROBE_FILE).exists(),
            "the probe is removed"
        );

        let missing = dir.path().join("gone");
        let failing = Checks::new()
            .with(DirWritable::new(&missing))
            .with(FreeSpace::new(dir.path(), MinFreeSpace::Percent(100.0)));
        let report = run(failing.iter()).await;
        assert!(!report.ready);
        assert_eq!(report.reasons.len(), 2, "{report:?}");
        assert!(report.reasons[0].starts_with("data dir not writable: "));
        assert!(report.reasons[1].starts_with("free space low: "));
    }
}
