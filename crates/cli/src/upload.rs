//! `resumable upload FILE... --to URL`.

use crate::options::{ChunkSize, HttpArgs, parse_chunk_size, parse_metadata_pair, parse_rate};
use crate::report::{FileEntry, Mode, Reporter};
use crate::{Outcome, Usage};
use anyhow::Context;
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use resumable_client::{
    ChecksumAlgorithm, Client, ClientError, Metadata, Protocol, StateStore, UploadOutcome,
    UploadRequest, Url,
};
use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Flags of `resumable upload`.
#[derive(Args, Debug)]
pub(crate) struct UploadArgs {
    /// Files to upload; directories are uploaded recursively.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Where to upload: the creation URL (e.g. http://127.0.0.1:8080/files/) for tus and
    /// `--protocol ietf`, or with `--protocol simple` the base URL that `status` and `upload` are
    /// relative to.
    #[arg(long, value_name = "URL")]
    to: Url,

    /// The protocol to speak.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Tus)]
    protocol: ProtocolArg,

    /// The most bytes one request carries (e.g. 8MiB), or `unlimited`.
    #[arg(long, value_name = "SIZE", default_value = "32MiB", value_parser = parse_chunk_size)]
    chunk_size: ChunkSize,

    /// How many files upload at the same time.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,

    /// Split each file into N parts uploaded at once, which the server joins into one upload (tus
    /// concatenation). Parts are at least 1 MiB, so smaller files use fewer (under 2 MiB: sent
    /// whole). Refused unless the server advertises the concatenation extension. A rerun continues
    /// an upload the way it started.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    parts: u16,

    /// Metadata of each upload (tus), e.g. `--metadata album=summer` (repeatable). `filename` is
    /// always sent (the file's name unless given here); `--protocol ietf` sends it as
    /// `Content-Disposition` and the rest as tus's `Upload-Metadata`.
    #[arg(long = "metadata", short = 'm', value_name = "KEY=VALUE", value_parser = parse_metadata_pair)]
    metadata: Vec<(String, String)>,

    /// Send an `Upload-Checksum` of each chunk (tus checksum extension): sha1, md5, sha256, sha512
    /// or crc32. Refused when the server does not advertise the extension.
    #[arg(long, value_name = "ALGORITHM")]
    checksum: Option<ChecksumAlgorithm>,

    /// Send each file no faster than this many bytes per second (e.g. 10MiB), shared by its parts.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    limit_rate: Option<u64>,

    /// Where uploads are remembered so a rerun resumes them (default: $XDG_STATE_HOME/resumable,
    /// i.e. ~/.local/state/resumable).
    #[arg(long, value_name = "DIR", env = "RESUMABLE_STATE_DIR")]
    state_dir: Option<PathBuf>,

    /// Print one JSON object per file on stdout (progress lines go to stderr).
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    http: HttpArgs,
}

/// `--protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProtocolArg {
    /// tus 1.0.0 (the creation URL is `--to`).
    Tus,
    /// The seed's simple protocol (`GET status`, `POST upload` relative to `--to`).
    Simple,
    /// The IETF draft "Resumable Uploads for HTTP", interop version 8 (the creation URL is
    /// `--to`); each file whole, no `--checksum`.
    Ietf,
}

impl From<ProtocolArg> for Protocol {
    fn from(protocol: ProtocolArg) -> Self {
        match protocol {
            ProtocolArg::Tus => Protocol::Tus,
            ProtocolArg::Simple => Protocol::Simple,
            ProtocolArg::Ietf => Protocol::Ietf,
        }
    }
}

/// One file to upload.
struct FileToUpload {
    entry: FileEntry,
    /// The path below a directory given on the command line, for the `relativePath` metadata.
    relative_path: Option<String>,
}

pub(crate) async fn upload(args: UploadArgs) -> anyhow::Result<Outcome> {
    let config = args.http.client_config()?;
    let files = collect_files(&args.files)?;
    let template = request_template(&args)?;
    let client = Client::new(config)?;
    if let Some(algorithm) = args.checksum {
        if args.protocol == ProtocolArg::Ietf {
            let reason = "per-chunk checksums are the tus checksum extension; the IETF draft \
                          protocol does not send them";
            return Err(Usage(format!("--checksum {algorithm}: {reason}")).into());
        }
        check_checksum(&client, &args.to, algorithm).await?;
    }
    if args.parts > 1 {
        check_concatenation(&client, &args, args.parts).await?;
    }
    let mode = if args.json {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Bars
    } else {
        Mode::Lines
    };
    let (entries, relative_paths): (Vec<_>, Vec<_>) = files
        .into_iter()
        .map(|file| (file.entry, file.relative_path))
        .unzip();
    let requests: Vec<UploadRequest> = entries
        .iter()
        .zip(relative_paths)
        .map(|(entry, relative)| request_for(&template, &entry.path, relative))
        .collect();
    let reporter = Reporter::new(mode, entries);
    let uploads = futures_util::stream::iter(requests.iter().enumerate())
        .map(|(index, request)| upload_one(&client, &reporter, index, request))
        .buffer_unordered(usize::from(args.parallel))
        .collect::<Vec<_>>();
    tokio::select! {
        results = uploads => {
            let failed = results.iter().filter(|result| result.is_err()).count();
            reporter.summary(failed);
            Ok(if failed == 0 { Outcome::Success } else { Outcome::Failed })
        }
        signal = crate::interrupt() => {
            reporter.interrupted();
            eprintln!(
                "interrupted; the server keeps what it stored. To resume, run the same command:\n  {}",
                crate::command_line()
            );
            Ok(Outcome::Interrupted(signal))
        }
    }
}

async fn upload_one(
    client: &Client,
    reporter: &Reporter,
    index: usize,
    request: &UploadRequest,
) -> Result<UploadOutcome, ClientError> {
    reporter.start(index);
    let result = client
        .upload(request, &|event| reporter.event(index, event))
        .await;
    reporter.finish(index, &result);
    result
}

/// Everything but the path, shared by every file.
fn request_template(args: &UploadArgs) -> anyhow::Result<UploadRequest> {
    let mut metadata = Metadata::default();
    for (key, value) in &args.metadata {
        metadata
            .insert(key, Some(value.clone().into_bytes()))
            .map_err(|error| Usage(format!("--metadata {key}: {error}")))?;
    }
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => StateStore::default_dir().ok_or_else(|| {
            Usage("no state directory (HOME is unset); pass --state-dir DIR".into())
        })?,
    };
    let mut template = UploadRequest::new(PathBuf::new(), args.to.clone());
    template.protocol = args.protocol.into();
    template.chunk_size = args.chunk_size.0;
    template.metadata = metadata;
    template.checksum = args.checksum;
    template.rate_limit = args.limit_rate;
    template.parts = args.parts;
    template.state = Some(StateStore::new(state_dir));
    Ok(template)
}

fn request_for(template: &UploadRequest, path: &Path, relative: Option<String>) -> UploadRequest {
    let mut request = template.clone();
    request.path = path.to_owned();
    if let Some(relative) = relative
        && request.metadata.get("relativePath").is_none()
    {
        // Cannot fail: the key is valid, and absent (or present without a value, then kept).
        let _ = request
            .metadata
            .insert("relativePath", Some(relative.into_bytes()));
    }
    request
}

async fn check_checksum(
    client: &Client,
    endpoint: &Url,
    algorithm: ChecksumAlgorithm,
) -> anyhow::Result<()> {
    let capabilities = client
        .capabilities(endpoint)
        .await
        .with_context(|| format!("cannot ask {endpoint} what it supports"))?;
    capabilities
        .check_checksum(endpoint, algorithm)
        .map_err(|error| Usage(format!("--checksum {algorithm}: {error}")).into())
}

/// `--parts` needs a tus server that joins partial uploads.
async fn check_concatenation(client: &Client, args: &UploadArgs, parts: u16) -> anyhow::Result<()> {
    let whole = match args.protocol {
        ProtocolArg::Tus => None,
        ProtocolArg::Simple => Some("the simple protocol"),
        ProtocolArg::Ietf => Some("the IETF draft protocol"),
    };
    if let Some(protocol) = whole {
        let reason = format!("{protocol} sends each file whole (parts need tus concatenation)");
        return Err(Usage(format!("--parts {parts}: {reason}")).into());
    }
    let endpoint = &args.to;
    let capabilities = client
        .capabilities(endpoint)
        .await
        .with_context(|| format!("cannot ask {endpoint} what it supports"))?;
    capabilities
        .check_concatenation(endpoint)
        .map_err(|error| Usage(format!("--parts {parts}: {error}; leave --parts out")).into())
}

/// The files named on the command line, directories expanded (sorted, symlinked directories not
/// followed), each file once.
fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<FileToUpload>> {
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    for path in paths {
        let metadata = std::fs::metadata(path)
            .map_err(|error| Usage(format!("{}: {error}", path.display())))?;
        if metadata.is_dir() {
            let base = path.file_name().map(PathBuf::from).unwrap_or_default();
            walk(path, &base, &mut files, &mut seen)?;
        } else {
            add_file(
                path,
                path.display().to_string(),
                None,
                &mut files,
                &mut seen,
            )?;
        }
    }
    Ok(files)
}

fn walk(
    dir: &Path,
    relative: &Path,
    files: &mut Vec<FileToUpload>,
    seen: &mut HashSet<PathBuf>,
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let relative = relative.join(entry.file_name());
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot inspect {}", path.display()))?;
        if kind.is_dir() {
            walk(&path, &relative, files, seen)?;
        } else if std::fs::metadata(&path).is_ok_and(|metadata| metadata.is_file()) {
            let name = path.display().to_string();
            let relative = relative.to_string_lossy().into_owned();
            add_file(&path, name, Some(relative), files, seen)?;
        }
    }
    Ok(())
}

fn add_file(
    path: &Path,
    name: String,
    relative_path: Option<String>,
    files: &mut Vec<FileToUpload>,
    seen: &mut HashSet<PathBuf>,
) -> anyhow::Result<()> {
    let canonical = std::fs::canonicalize(path)
        .map_err(|error| Usage(format!("{}: {error}", path.display())))?;
    let metadata = std::fs::metadata(&canonical)
        .map_err(|error| Usage(format!("{}: {error}", path.display())))?;
    if !metadata.is_file() {
        return Err(Usage(format!("{} is not a regular file", path.display())).into());
    }
    if seen.insert(canonical) {
        files.push(FileToUpload {
            entry: FileEntry {
                name,
                path: path.to_owned(),
                size: metadata.len(),
            },
            relative_path,
        });
    }
    Ok(())
}
