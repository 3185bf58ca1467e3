//! What `resumable upload` shows while it works: progress bars when stdout is a terminal, one
//! log line per event otherwise, and with `--json` one JSON object per file on stdout (log lines
//! then go to stderr).
//!
//! Log lines are stable so scripts and tests can read them: `NAME: created URL`,
//! `NAME: created N parts: URL URL ...` (a file sent in parts; its final upload is `created` at
//! the end), `NAME: resuming at OFFSET of SIZE bytes: URL`, `NAME: P% stored (C of SIZE bytes)` at each
//! tenth, `NAME: retrying in DELAY (attempt N): ERROR`, `NAME: done in TIME (RATE): URL`.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use resumable_client::{ClientError, UploadEvent, UploadOutcome, Url};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// indicatif bars on stdout (a terminal).
    Bars,
    /// Log lines on stdout.
    Lines,
    /// JSON objects on stdout, log lines on stderr.
    Json,
}

/// One file being reported.
#[derive(Debug)]
pub(crate) struct FileEntry {
    /// The name shown (the path as given, or inside a given directory).
    pub(crate) name: String,
    /// The path.
    pub(crate) path: PathBuf,
    /// Its size.
    pub(crate) size: u64,
}

/// Where one file stands.
struct FileState {
    entry: FileEntry,
    url: Option<Url>,
    /// How many partial uploads carry the file, once known.
    parts: Option<u16>,
    sent: u64,
    confirmed: u64,
    /// Lines mode: the last tenth reported.
    reported_tenth: u64,
    started: Option<Instant>,
    finished: bool,
    bar: Option<ProgressBar>,
}

/// The bars of a terminal.
struct Bars {
    multi: MultiProgress,
    /// The sum over all files; `None` for a single file.
    total: Option<ProgressBar>,
}

/// Reports the progress of every file of one `resumable upload`.
pub(crate) struct Reporter {
    mode: Mode,
    bars: Option<Bars>,
    files: Mutex<Vec<FileState>>,
    started: Instant,
}

/// The `--json` object of one file.
#[derive(Serialize)]
struct JsonReport<'a> {
    file: &'a str,
    path: &'a std::path::Path,
    size: u64,
    /// `done`, `failed` or `interrupted`.
    status: &'static str,
    url: Option<&'a str>,
    /// Partial uploads carrying the file (1: sent whole); null while unknown.
    parts: Option<u16>,
    /// Bytes the server confirmed.
    offset: u64,
    resumed_from: Option<u64>,
    started_over: bool,
    retries: u32,
    seconds: f64,
    error: Option<String>,
}

/// Fits 80 columns: the bar takes whatever the terminal has left.
const FILE_TEMPLATE: &str = "{prefix:18!} [{wide_bar}] {bytes:>9}/{total_bytes:<9} \
                             {binary_bytes_per_sec:>11} {eta:>3} {msg:10}";
const TOTAL_TEMPLATE: &str = "{prefix:18!} [{wide_bar}] {bytes:>9}/{total_bytes:<9} \
                              {binary_bytes_per_sec:>11} {eta:>3} {msg:10}";

/// Moves `bar` to `position` without counting the jump as speed: the estimator records the
/// jump (tick), then forgets the rate it implied (reset).
fn jump_to(bar: &ProgressBar, position: u64) {
    bar.set_position(position);
    bar.tick();
    bar.reset_eta();
}

/// A bar that draws nothing until it joins the [`MultiProgress`]: a bar drawing on its own
/// (stderr) would shift the lines the multi-bar believes it drew, leaving stale copies behind.
fn hidden_bar(length: u64, template: &str) -> ProgressBar {
    ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::hidden())
        .with_style(style(template))
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Reporter {
    pub(crate) fn new(mode: Mode, entries: Vec<FileEntry>) -> Self {
        let bars = (mode == Mode::Bars).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let total = (entries.len() > 1).then(|| {
                let bytes = entries.iter().map(|entry| entry.size).sum();
                let total = multi.add(hidden_bar(bytes, TOTAL_TEMPLATE));
                total.set_prefix(format!("total ({} files)", entries.len()));
                total
            });
            Bars { multi, total }
        });
        let files = entries
            .into_iter()
            .map(|entry| FileState {
                entry,
                url: None,
                parts: None,
                sent: 0,
                confirmed: 0,
                reported_tenth: 0,
                started: None,
                finished: false,
                bar: None,
            })
            .collect();
        Reporter {
            mode,
            bars,
            files: Mutex::new(files),
            started: Instant::now(),
        }
    }

    fn files(&self) -> MutexGuard<'_, Vec<FileState>> {
        self.files
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A log line: above the bars, on stdout, or on stderr in JSON mode.
    fn line(&self, text: &str) {
        match (&self.bars, self.mode) {
            (Some(bars), _) => bars.multi.suspend(|| println!("{text}")),
            (None, Mode::Json) => eprintln!("{text}"),
            (None, _) => println!("{text}"),
        }
    }

    /// An error line, always on stderr.
    fn error_line(&self, text: &str) {
        match &self.bars {
            Some(bars) => bars.multi.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// File `index` starts.
    pub(crate) fn start(&self, index: usize) {
        let mut files = self.files();
        let Some(file) = files.get_mut(index) else {
            return;
        };
        file.started = Some(Instant::now());
        if let Some(bars) = &self.bars {
            let bar = hidden_bar(file.entry.size, FILE_TEMPLATE);
            let bar = match &bars.total {
                Some(total) => bars.multi.insert_before(total, bar),
                None => bars.multi.add(bar),
            };
            bar.set_prefix(file.entry.name.clone());
            file.bar = Some(bar);
        }
    }

    /// An event of file `index`.
    pub(crate) fn event(&self, index: usize, event: &UploadEvent) {
        let mut files = self.files();
        let Some(file) = files.get_mut(index) else {
            return;
        };
        let name = file.entry.name.clone();
        let line = match event {
            UploadEvent::Created { url } => {
                file.url = Some(url.clone());
                Some(format!("{name}: created {url}"))
            }
            UploadEvent::CreatedParts { urls } => {
                file.parts = u16::try_from(urls.len()).ok();
                let urls: Vec<&str> = urls.iter().map(Url::as_str).collect();
                Some(format!(
                    "{name}: created {} parts: {}",
                    urls.len(),
                    urls.join(" ")
                ))
            }
            UploadEvent::Resumed { url, offset } => {
                file.url = url.clone().or(file.url.take());
                file.reported_tenth = tenth(*offset, file.entry.size);
                file.sent = *offset;
                file.confirmed = *offset;
                if let Some(bar) = &file.bar {
                    jump_to(bar, *offset);
                }
                let at = url
                    .as_ref()
                    .map(|url| format!(": {url}"))
                    .unwrap_or_default();
                Some(format!(
                    "{name}: resuming at {offset} of {} bytes{at}",
                    file.entry.size
                ))
            }
            UploadEvent::StartedOver { reason, .. } => {
                file.url = None;
                Some(format!("{name}: starting over: {reason}"))
            }
            UploadEvent::Progress(progress) => {
                file.sent = progress.sent;
                file.confirmed = progress.confirmed;
                self.show_progress(file)
            }
            UploadEvent::Retrying {
                attempt,
                delay,
                error,
            } => Some(format!(
                "{name}: retrying in {} (attempt {attempt}): {error}",
                seconds(*delay)
            )),
            UploadEvent::Completed { url } => {
                file.url = url.clone().or(file.url.take());
                None
            }
        };
        if matches!(event, UploadEvent::Resumed { .. }) {
            self.total_jumped(&files);
        } else {
            self.update_total(&files);
        }
        drop(files);
        if let Some(line) = line {
            self.line(&line);
        }
    }

    /// Bars move with every update; lines mode reports each tenth confirmed.
    fn show_progress(&self, file: &mut FileState) -> Option<String> {
        if let Some(bar) = &file.bar {
            bar.set_position(file.sent);
            bar.set_message(format!(
                "stored {}%",
                percent(file.confirmed, file.entry.size)
            ));
            return None;
        }
        let tenth = tenth(file.confirmed, file.entry.size);
        if tenth <= file.reported_tenth || file.confirmed >= file.entry.size {
            return None;
        }
        file.reported_tenth = tenth;
        Some(format!(
            "{}: {}% stored ({} of {} bytes)",
            file.entry.name,
            percent(file.confirmed, file.entry.size),
            file.confirmed,
            file.entry.size
        ))
    }

    /// File `index` ended.
    pub(crate) fn finish(&self, index: usize, result: &Result<UploadOutcome, ClientError>) {
        let mut files = self.files();
        let Some(file) = files.get_mut(index) else {
            return;
        };
        file.finished = true;
        if let Some(bar) = file.bar.take() {
            bar.finish_and_clear();
        }
        let elapsed = file
            .started
            .map_or(Duration::ZERO, |started| started.elapsed());
        let name = file.entry.name.clone();
        let report = match result {
            Ok(outcome) => {
                file.confirmed = outcome.size;
                file.sent = outcome.size;
                file.url = outcome.url.clone().or(file.url.take());
                file.parts = Some(outcome.parts);
                let moved = outcome.size - outcome.resumed_from.unwrap_or(0);
                let url = file
                    .url
                    .as_ref()
                    .map_or("(no URL)".to_owned(), Url::to_string);
                let done = format!(
                    "{name}: done in {} ({}): {url}",
                    seconds(elapsed),
                    rate(moved, elapsed)
                );
                (
                    Some(done),
                    None,
                    json(file, "done", Some(outcome), None, elapsed),
                )
            }
            Err(error) => {
                let failed = format!("{name}: failed: {error}{}", hint(error));
                let report = json(file, "failed", None, Some(error.to_string()), elapsed);
                (None, Some(failed), report)
            }
        };
        self.update_total(&files);
        drop(files);
        self.emit(report);
    }

    fn update_total(&self, files: &[FileState]) {
        if let Some(bars) = &self.bars
            && let Some(total) = &bars.total
        {
            total.set_position(files.iter().map(|file| file.sent).sum());
        }
    }

    /// After a resume: the total jumped, which is not speed.
    fn total_jumped(&self, files: &[FileState]) {
        if let Some(bars) = &self.bars
            && let Some(total) = &bars.total
        {
            jump_to(total, files.iter().map(|file| file.sent).sum());
        }
    }

    fn emit(&self, (line, error, json): (Option<String>, Option<String>, String)) {
        if let Some(line) = line {
            self.line(&line);
        }
        if let Some(error) = error {
            self.error_line(&error);
        }
        if self.mode == Mode::Json {
            println!("{json}");
        }
    }

    /// The run was interrupted: reports every file that did not finish.
    pub(crate) fn interrupted(&self) {
        let mut reports = Vec::new();
        self.clear();
        for file in self.files().iter().filter(|file| !file.finished) {
            let elapsed = file
                .started
                .map_or(Duration::ZERO, |started| started.elapsed());
            let at = file
                .url
                .as_ref()
                .map(|url| format!(": {url}"))
                .unwrap_or_default();
            let line = format!(
                "{}: interrupted: {} of {} bytes confirmed, {} sent{at}",
                file.entry.name, file.confirmed, file.entry.size, file.sent
            );
            reports.push((
                Some(line),
                None,
                json(file, "interrupted", None, None, elapsed),
            ));
        }
        for report in reports {
            self.emit(report);
        }
    }

    /// The closing line of a run of several files.
    pub(crate) fn summary(&self, failed: usize) {
        self.clear();
        let files = self.files();
        if files.len() < 2 && failed == 0 {
            return;
        }
        let bytes: u64 = files.iter().map(|file| file.entry.size).sum();
        let count = files.len();
        drop(files);
        let elapsed = self.started.elapsed();
        let line = if failed == 0 {
            format!(
                "{count} files uploaded ({bytes} bytes) in {}",
                seconds(elapsed)
            )
        } else {
            format!("{failed} of {count} uploads failed")
        };
        match self.mode {
            Mode::Json => eprintln!("{line}"),
            _ if failed > 0 => eprintln!("{line}"),
            _ => println!("{line}"),
        }
    }

    /// Removes every bar from the screen for good, for the closing lines.
    fn clear(&self) {
        let Some(bars) = &self.bars else {
            return;
        };
        // Clear what is drawn, then draw nowhere: finishing the bars one by one redraws the
        // others, and a steady tick may still be drawing.
        let _ = bars.multi.clear();
        bars.multi.set_draw_target(ProgressDrawTarget::hidden());
        for file in self.files().iter_mut() {
            if let Some(bar) = file.bar.take() {
                bar.finish_and_clear();
            }
        }
        if let Some(total) = &bars.total {
            total.finish_and_clear();
        }
    }
}

fn json(
    file: &FileState,
    status: &'static str,
    outcome: Option<&UploadOutcome>,
    error: Option<String>,
    elapsed: Duration,
) -> String {
    let url = file.url.as_ref().map(Url::as_str);
    let report = JsonReport {
        file: &file.entry.name,
        path: &file.entry.path,
        size: file.entry.size,
        status,
        url,
        parts: file.parts,
        offset: file.confirmed,
        resumed_from: outcome.and_then(|outcome| outcome.resumed_from),
        started_over: outcome.is_some_and(|outcome| outcome.started_over),
        retries: outcome.map_or(0, |outcome| outcome.retries),
        seconds: elapsed.as_secs_f64(),
        error,
    };
    serde_json::to_string(&report).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
}

/// A likely fix for a failure, when one is known.
fn hint(error: &ClientError) -> &'static str {
    match error {
        ClientError::Status {
            method: "POST",
            status,
            ..
        } if matches!(status.as_u16(), 404 | 405) => {
            "\n  hint: --to must be where uploads are created: the creation URL such as \
             http://HOST:PORT/files/ (tus, --protocol ietf), or the base URL with --protocol \
             simple"
        }
        ClientError::Refused { .. } => {
            "\n  hint: pass the server's credentials: --token TOKEN (or RESUMABLE_TOKEN), or \
             --header 'Authorization: ...'"
        }
        _ => "",
    }
}

/// Which tenth of `total` `done` reached (0..=10).
fn tenth(done: u64, total: u64) -> u64 {
    if total == 0 {
        10
    } else {
        u64::try_from(u128::from(done) * 10 / u128::from(total)).unwrap_or(10)
    }
}

fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        100
    } else {
        u64::try_from(u128::from(done) * 100 / u128::from(total)).unwrap_or(100)
    }
}

/// `1.23s`.
pub(crate) fn seconds(duration: Duration) -> String {
    format!("{:.2}s", duration.as_secs_f64())
}

/// `12.3MiB/s`: one token, so log readers can mask it.
fn rate(bytes: u64, elapsed: Duration) -> String {
    let per_second = bytes as f64 / elapsed.as_secs_f64().max(0.001);
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = per_second;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}/s", units[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenths_and_percents_handle_empty_files() {
        assert_eq!(tenth(0, 0), 10);
        assert_eq!(tenth(5, 10), 5);
        assert_eq!(tenth(99, 100), 9);
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(0, 0), 100);
    }

    #[test]
    fn rates_are_one_token() {
        assert_eq!(rate(3 << 20, Duration::from_secs(2)), "1.5MiB/s");
        assert_eq!(rate(100, Duration::from_secs(1)), "100.0B/s");
        assert_eq!(seconds(Duration::from_millis(1234)), "1.23s");
    }
}
