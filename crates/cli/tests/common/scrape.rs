//! `/metrics` as a test reads it: series by name and labels, and `promtool check metrics`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// One scrape: every sample, keyed by metric name and its labels (sorted).
#[derive(Debug, Clone)]
pub(crate) struct Scrape {
    /// The text as served.
    pub(crate) text: String,
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Scrape {
    /// Parses the text exposition format (enough of it for what the server writes).
    pub(crate) fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value in {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            samples.insert((name.to_owned(), labels), value);
        }
        Scrape {
            text: text.to_owned(),
            samples,
        }
    }

    /// The sample of `name` with exactly `labels`; 0 when the series does not exist (yet).
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        labels.sort();
        self.samples
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// Whether any series of `name` exists.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.samples.keys().any(|(sample, _)| sample == name)
    }
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let end = after
            .find('"')
            .unwrap_or_else(|| panic!("unterminated label in {text:?}"));
        labels.push((
            key.trim_start_matches(',').to_owned(),
            after[..end].to_owned(),
        ));
        rest = &after[end + 1..];
    }
    labels.sort();
    labels
}

/// GET `url` (a `/metrics`): status 200 and the Prometheus text format, parsed.
pub(crate) async fn scrape(http: &reqwest::Client, url: &str) -> Scrape {
    let response = http.get(url).send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200, "GET {url}");
    let content_type = super::header(&response, "Content-Type");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "Content-Type {content_type:?}"
    );
    Scrape::parse(&response.text().await.expect("metrics body"))
}

/// `promtool check metrics` on `text`: it must pass without a lint. Without promtool the check
/// is skipped loudly, unless `RESUMABLE_REQUIRE_PROMTOOL` is set (as `./test.sh` does, having
/// installed it), where its absence fails the test.
pub(crate) fn promtool_check(text: &str) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            assert!(
                std::env::var_os("RESUMABLE_REQUIRE_PROMTOOL").is_none(),
                "promtool cannot run ({error}): install Debian's `prometheus` package \
                 (./test.sh does)"
            );
            // Straight to the process's stderr: libtest captures `eprintln!` of a passing test,
            // and a skip that nobody sees reads as a pass.
            let _ = writeln!(
                std::io::stderr(),
                "\nWARNING: promtool check SKIPPED, the metrics text was not linted: promtool \
                 is missing (Debian package `prometheus`; RESUMABLE_REQUIRE_PROMTOOL=1 makes \
                 this an error)\n"
            );
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("run promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n--- the text ---\n{text}",
        output.status
    );
}
