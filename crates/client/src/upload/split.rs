//! A file sent as several partial uploads at once, which the server joins into one final upload
//! (tus `concatenation`).
//!
//! The parts are contiguous byte ranges of the file. They are created first and remembered
//! together; then each streams its range from disk and recovers from failures exactly like a
//! whole upload (its own backoff, `HEAD` and resume from the server's offset), all at the same
//! time. Once every part is complete, the final upload is created from their URLs with the
//! file's metadata, remembered, and checked to hold the whole file. The final is created only
//! then, so servers with plain `concatenation` (no `concatenation-unfinished`) work too.
//!
//! A rerun continues: a complete final upload means done; otherwise each part continues from
//! its server offset and the final is created (or re-checked) when they are complete. A part
//! the server no longer has (`404`/`410`, or a different length) makes the whole file start
//! over: the other parts are deleted when the server lets us, and new parts are made.

use super::{Attempt, EventSink, Progress, Session, StartOver, UploadEvent};
use crate::state::{Fingerprint, SavedPart, SavedUpload};
use crate::{ClientError, tus};
use futures_util::future::{join_all, try_join_all};
use reqwest::Url;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

/// The smallest part a file is split into: below it, the requests and `fsync`s a part costs
/// outweigh what sending it alongside others gains.
pub const MIN_PART_SIZE: u64 = 1 << 20;

/// The byte ranges of a file of `size` bytes sent as (at most) `parts` parts: contiguous, in
/// file order, and each at least [`MIN_PART_SIZE`] (one range for a smaller file, possibly
/// empty).
pub(super) fn plan(size: u64, parts: u16) -> Vec<Range<u64>> {
    let count = u64::from(parts).min(size / MIN_PART_SIZE).max(1);
    let boundary = |index: u64| {
        let at = u128::from(size) * u128::from(index) / u128::from(count);
        // Cannot fail: at most `size`.
        u64::try_from(at).unwrap_or(size)
    };
    (0..count)
        .map(|index| boundary(index)..boundary(index + 1))
        .collect()
}

/// One partial upload.
#[derive(Debug, Clone)]
struct Part {
    url: Url,
    /// The bytes of the file it carries.
    range: Range<u64>,
}

/// The uploads of a file sent in parts.
#[derive(Debug)]
struct Split {
    parts: Vec<Part>,
    /// The upload joining them, once created.
    final_url: Option<Url>,
}

impl Split {
    /// The remembered split upload of a file of `size` bytes, if the state describes one that
    /// fits: parsable URLs, non-empty parts that cover the file in order.
    fn remembered(saved: SavedUpload, size: u64) -> Option<Split> {
        let mut parts = Vec::with_capacity(saved.parts.len());
        let mut next = 0;
        for part in saved.parts {
            if part.start != next || part.end <= part.start {
                return None;
            }
            next = part.end;
            let url = Url::parse(&part.url).ok()?;
            parts.push(Part {
                url,
                range: part.start..part.end,
            });
        }
        if next != size || parts.is_empty() {
            return None;
        }
        let final_url = match saved.url {
            Some(url) => Some(Url::parse(&url).ok()?),
            None => None,
        };
        Some(Split { parts, final_url })
    }

    fn saved_parts(&self) -> Vec<SavedPart> {
        self.parts
            .iter()
            .map(|part| SavedPart {
                url: part.url.to_string(),
                start: part.range.start,
                end: part.range.end,
            })
            .collect()
    }

    fn urls(&self) -> Vec<Url> {
        self.parts.iter().map(|part| part.url.clone()).collect()
    }
}

/// Adds up the progress of the parts into the file's; passes every other event on.
struct Tally<'a> {
    events: EventSink<'a>,
    total: u64,
    /// `(sent, confirmed)` of each part.
    parts: Mutex<Vec<(u64, u64)>>,
}

impl Tally<'_> {
    fn event(&self, index: usize, event: &UploadEvent) {
        let UploadEvent::Progress(progress) = event else {
            return (self.events)(event);
        };
        // Held while the sum is reported, so sums are reported in the order they were made.
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(part) = parts.get_mut(index) {
            *part = (progress.sent, progress.confirmed);
        }
        let (sent, confirmed) = parts.iter().fold((0, 0), |(sent, confirmed), part| {
            (sent + part.0, confirmed + part.1)
        });
        (self.events)(&UploadEvent::Progress(Progress {
            sent,
            confirmed,
            total: self.total,
        }));
    }
}

impl Session<'_> {
    /// How many parts a new upload of this file gets.
    pub(super) fn planned_parts(&self) -> usize {
        plan(self.source.size, self.request.parts).len()
    }

    /// The file in parts: the remembered ones from their server offsets, or new ones; then the
    /// final upload.
    pub(super) async fn split(
        &mut self,
        fingerprint: Option<&Fingerprint>,
        saved: Option<SavedUpload>,
    ) -> Result<Attempt<Url>, ClientError> {
        let size = self.source.size;
        let remembered = saved.and_then(|saved| {
            let split = Split::remembered(saved, size);
            if split.is_none() {
                tracing::warn!("ignoring unusable resume state of a file sent in parts");
            }
            split
        });
        let (mut split, offsets) = match remembered {
            Some(mut split) => {
                if let Some(url) = self.finished_final(&mut split).await? {
                    self.outcome.parts = part_count(&split);
                    return Ok(Ok(url));
                }
                match self.part_offsets(&split).await? {
                    Ok(offsets) => {
                        self.resumed(split.final_url.clone(), offsets.iter().sum());
                        (split, offsets)
                    }
                    Err(start_over) => {
                        self.abandon(&split, &start_over.previous).await;
                        return Ok(Err(start_over));
                    }
                }
            }
            // Nothing usable remembered, and the request now asks for the file whole.
            None if self.planned_parts() < 2 => return self.whole(fingerprint, None).await,
            None => {
                let split = self.create_parts(fingerprint).await?;
                let offsets = vec![0; split.parts.len()];
                (split, offsets)
            }
        };
        self.outcome.parts = part_count(&split);
        if let Err((index, error)) = self.send_parts(&split, &offsets).await {
            return match error {
                ClientError::Gone { .. } if !self.outcome.started_over => {
                    let previous = split.parts[index].url.clone();
                    self.abandon(&split, &previous).await;
                    Ok(Err(StartOver {
                        previous,
                        reason: error,
                    }))
                }
                error => Err(error),
            };
        }
        let url = self.join(fingerprint, &mut split).await?;
        Ok(Ok(url))
    }

    /// The remembered final upload's URL if it already holds the whole file. One that no longer
    /// exists or has another length is dropped (a new one is made once the parts are complete).
    async fn finished_final(&mut self, split: &mut Split) -> Result<Option<Url>, ClientError> {
        let Some(url) = split.final_url.clone() else {
            return Ok(None);
        };
        let http = &self.client.http;
        let size = self.source.size;
        match self.retrying(|| tus::status(http, &url)).await {
            Ok(status) if status.length == Some(size) && status.is_complete() => {
                self.resumed(Some(url.clone()), size);
                Ok(Some(url))
            }
            Ok(status) if status.length == Some(size) => Ok(None),
            Ok(_) | Err(ClientError::Gone { .. }) => {
                split.final_url = None;
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// The server's offset of each remembered part.
    async fn part_offsets(&mut self, split: &Split) -> Result<Attempt<Vec<u64>>, ClientError> {
        let mut offsets = Vec::with_capacity(split.parts.len());
        for part in &split.parts {
            let mut session = self.part_session(part, split.parts.len(), self.events);
            let offset = session.offset_of(&part.url).await;
            self.outcome.retries += session.outcome.retries;
            match offset? {
                Ok(offset) => offsets.push(offset),
                Err(start_over) => return Ok(Err(start_over)),
            }
        }
        Ok(Ok(offsets))
    }

    /// Creates the partial uploads (the server must offer concatenation) and remembers them
    /// before any byte is sent.
    async fn create_parts(
        &mut self,
        fingerprint: Option<&Fingerprint>,
    ) -> Result<Split, ClientError> {
        let http = &self.client.http;
        let endpoint = &self.request.endpoint;
        let capabilities = self.retrying(|| tus::capabilities(http, endpoint)).await?;
        capabilities.check_concatenation(endpoint)?;
        let mut parts = Vec::new();
        for range in plan(self.source.size, self.request.parts) {
            let length = range.end - range.start;
            let url = self
                .retrying(|| tus::create_partial(http, endpoint, length))
                .await?;
            self.backoff.progressed();
            parts.push(Part { url, range });
        }
        let split = Split {
            parts,
            final_url: None,
        };
        self.save(fingerprint, None, split.saved_parts())?;
        self.emit(UploadEvent::CreatedParts { urls: split.urls() });
        self.progress(0, 0);
        Ok(split)
    }

    /// A session sending `part`, one of `count`, reporting to `events`. The parts share the
    /// file's rate limit.
    fn part_session<'s>(&self, part: &Part, count: usize, events: EventSink<'s>) -> Session<'s>
    where
        Self: 's,
    {
        let count = u64::try_from(count).unwrap_or(u64::MAX).max(1);
        let rate_limit = self.rate_limit.map(|rate| (rate / count).max(1));
        Session::new(
            self.client,
            self.request,
            self.source.clone(),
            part.range.clone(),
            rate_limit,
            events,
        )
    }

    /// Sends every part from its offset, all at once, until all are complete. The first part
    /// that fails for good stops the others; its index comes with the error.
    async fn send_parts(
        &mut self,
        split: &Split,
        offsets: &[u64],
    ) -> Result<(), (usize, ClientError)> {
        let tally = Tally {
            events: self.events,
            total: self.source.size,
            parts: Mutex::new(offsets.iter().map(|&offset| (offset, offset)).collect()),
        };
        let tally = &tally;
        let sinks: Vec<_> = (0..split.parts.len())
            .map(|index| move |event: &UploadEvent| tally.event(index, event))
            .collect();
        let mut sessions: Vec<Session<'_>> = split
            .parts
            .iter()
            .zip(&sinks)
            .map(|(part, sink)| self.part_session(part, split.parts.len(), sink))
            .collect();
        let sending = sessions
            .iter_mut()
            .zip(&split.parts)
            .zip(offsets)
            .enumerate()
            .map(|(index, ((session, part), &offset))| async move {
                session
                    .send_tus(&part.url, offset)
                    .await
                    .map_err(|error| (index, error))
            });
        let result = try_join_all(sending).await;
        let retries: u32 = sessions.iter().map(|session| session.outcome.retries).sum();
        self.outcome.retries += retries;
        result.map(drop)
    }

    /// Every part is complete: the final upload joins them (created unless it exists), and must
    /// hold the whole file.
    async fn join(
        &mut self,
        fingerprint: Option<&Fingerprint>,
        split: &mut Split,
    ) -> Result<Url, ClientError> {
        self.backoff.progressed();
        let url = match &split.final_url {
            Some(url) => url.clone(),
            None => {
                let http = &self.client.http;
                let endpoint = &self.request.endpoint;
                let metadata = self.metadata();
                let parts = split.urls();
                let url = self
                    .retrying(|| tus::create_final(http, endpoint, &parts, &metadata))
                    .await?;
                split.final_url = Some(url.clone());
                self.save(fingerprint, Some(&url), split.saved_parts())?;
                self.emit(UploadEvent::Created { url: url.clone() });
                url
            }
        };
        self.await_assembly(&url).await?;
        Ok(url)
    }

    /// Waits until the final upload at `url` holds the whole file (a server may join the parts
    /// after answering the creation).
    async fn await_assembly(&mut self, url: &Url) -> Result<(), ClientError> {
        let http = &self.client.http;
        let size = self.source.size;
        loop {
            let status = self.retrying(|| tus::status(http, url)).await?;
            if status.length != Some(size) {
                return Err(ClientError::Protocol {
                    url: url.to_string(),
                    reason: format!(
                        "the final upload's length is {:?}, not the file's {size}",
                        status.length
                    ),
                });
            }
            if status.is_complete() {
                return Ok(());
            }
            let waiting = ClientError::Protocol {
                url: url.to_string(),
                reason: "the server has not joined the parts yet".into(),
            };
            self.pause(waiting).await?;
        }
    }

    /// Deletes what is left of a split upload that starts over (all but `gone`), so its bytes
    /// do not wait on the server for expiry. One try each; a server without termination, or
    /// one that fails, just keeps them until they expire.
    async fn abandon(&self, split: &Split, gone: &Url) {
        let http = &self.client.http;
        let leftovers = split
            .parts
            .iter()
            .map(|part| &part.url)
            .chain(&split.final_url)
            .filter(|url| *url != gone);
        let deletions = leftovers.map(|url| async move {
            if let Err(error) = tus::terminate(http, url).await {
                tracing::debug!(%url, %error, "could not delete an abandoned part");
            }
        });
        join_all(deletions).await;
    }
}

fn part_count(split: &Split) -> u16 {
    u16::try_from(split.parts.len()).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = MIN_PART_SIZE;

    #[test]
    fn parts_cover_the_file_in_order() {
        let size = 10 * MIB + 3;
        let ranges = plan(size, 4);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0].start, 0);
        assert_eq!(ranges[3].end, size);
        assert!(ranges.windows(2).all(|pair| pair[0].end == pair[1].start));
        let lengths: Vec<u64> = ranges.iter().map(|range| range.end - range.start).collect();
        assert!(
            lengths.iter().all(|&length| length >= 2 * MIB),
            "{lengths:?}"
        );
    }

    #[test]
    fn small_files_get_fewer_parts_and_none_is_empty_or_tiny() {
        let whole = |size: u64| {
            vec![Range {
                start: 0,
                end: size,
            }]
        };
        assert_eq!(plan(0, 4), whole(0));
        assert_eq!(plan(5, 4), whole(5));
        assert_eq!(plan(2 * MIB - 1, 4), whole(2 * MIB - 1));
        assert_eq!(plan(2 * MIB, 4), [0..MIB, MIB..2 * MIB]);
        assert_eq!(plan(3 * MIB + 1, 8).len(), 3);
        assert_eq!(plan(100 * MIB, 1).len(), 1);
        assert_eq!(plan(100 * MIB, 0).len(), 1);
        assert_eq!(plan(u64::MAX, u16::MAX).len(), usize::from(u16::MAX));
    }

    fn saved(parts: &[(u64, u64)], url: Option<&str>) -> SavedUpload {
        SavedUpload {
            url: url.map(str::to_owned),
            endpoint: "http://h/files/".into(),
            protocol: None,
            path: "/x/f".into(),
            size: 10,
            created: 1,
            parts: parts
                .iter()
                .enumerate()
                .map(|(index, &(start, end))| SavedPart {
                    url: format!("http://h/files/{index}"),
                    start,
                    end,
                })
                .collect(),
        }
    }

    #[test]
    fn remembered_parts_must_cover_the_file() {
        let split = Split::remembered(saved(&[(0, 4), (4, 10)], Some("http://h/files/f")), 10)
            .expect("usable");
        assert_eq!(split.parts.len(), 2);
        assert_eq!(split.final_url.unwrap().as_str(), "http://h/files/f");
        for unusable in [
            saved(&[(0, 4), (5, 10)], None),
            saved(&[(0, 4), (4, 9)], None),
            saved(&[(0, 0), (0, 10)], None),
            saved(&[], None),
            saved(&[(0, 10)], Some("not a url")),
        ] {
            assert!(
                Split::remembered(unusable.clone(), 10).is_none(),
                "{unusable:?}"
            );
        }
    }
}
