//! A file uploaded with the IETF draft "Resumable Uploads for HTTP": the remembered upload
//! continues from the offset its `HEAD` gives, or a new one is created (after the endpoint's
//! `OPTIONS` says whether the file fits); then `PATCH`es go from the server's offset, the last
//! with `Upload-Complete: ?1`, and after every retryable failure (`409`, `423`, `5xx`, a lost
//! connection, a stall) the offset is read again and sending continues from there.
//!
//! The server's `Upload-Limit`, wherever it comes (`OPTIONS`, creation, `HEAD`, `PATCH`), is
//! obeyed: a file over `max-size` is refused before a byte of it is sent, and chunks are cut to
//! `max-append-size`.

use super::{Attempt, Session, StartOver, UploadEvent, nothing_stored};
use crate::ClientError;
use crate::body::{SentCounter, file_range};
use crate::error::Recovery;
use crate::ietf::{self, UploadState};
use crate::state::{Fingerprint, SavedUpload};
use reqwest::Url;
use resumable_proto::ietf::UploadLimit;
use std::ops::Range;

impl Session<'_> {
    pub(super) async fn ietf(&mut self) -> Result<(), ClientError> {
        if self.request.checksum.is_some() {
            return Err(ClientError::Unsupported(
                "per-chunk checksums are the tus checksum extension; the IETF draft protocol \
                 does not send them"
                    .into(),
            ));
        }
        let remembered = self.remember()?;
        let fingerprint = remembered.as_ref().map(|(fingerprint, _lock)| fingerprint);
        let mut saved = self.load(fingerprint);
        let url = loop {
            match self.ietf_whole(fingerprint, saved.take()).await? {
                Ok(url) => break url,
                Err(start_over) => self.start_over(fingerprint, start_over)?,
            }
        };
        self.finish(remembered)?;
        self.outcome.url = Some(url.clone());
        self.emit(UploadEvent::Completed { url: Some(url) });
        Ok(())
    }

    /// The remembered upload from the server's offset, or a new one.
    async fn ietf_whole(
        &mut self,
        fingerprint: Option<&Fingerprint>,
        saved: Option<SavedUpload>,
    ) -> Result<Attempt<Url>, ClientError> {
        let remembered = saved
            .and_then(|saved| saved.url)
            .and_then(|url| Url::parse(&url).ok());
        let (url, state) = match remembered {
            Some(url) => match self.ietf_resume(&url).await? {
                Ok(state) => {
                    self.resumed(Some(url.clone()), state.offset);
                    (url, state)
                }
                Err(start_over) => return Ok(Err(start_over)),
            },
            None => self.ietf_create(fingerprint).await?,
        };
        match self.ietf_send(&url, state).await {
            Ok(()) => Ok(Ok(url)),
            Err(reason @ ClientError::Gone { .. }) if !self.outcome.started_over => {
                Ok(Err(StartOver {
                    previous: url,
                    reason,
                }))
            }
            Err(error) => Err(error),
        }
    }

    /// Where the remembered upload at `url` stands, if it still exists and carries this file.
    async fn ietf_resume(&mut self, url: &Url) -> Result<Attempt<UploadState>, ClientError> {
        match self.ietf_status(url).await {
            Ok(state) => match self.misfit(&state) {
                None => Ok(Ok(state)),
                Some(reason) => Ok(Err(StartOver {
                    previous: url.clone(),
                    reason: crate::http::protocol(url, reason),
                })),
            },
            Err(reason @ ClientError::Gone { .. }) => Ok(Err(StartOver {
                previous: url.clone(),
                reason,
            })),
            Err(error) => Err(error),
        }
    }

    /// Why `state` cannot be this file's upload, if it cannot.
    fn misfit(&self, state: &UploadState) -> Option<String> {
        let size = self.length();
        match state.length {
            Some(length) if length != size => Some(format!("its length is {length}, not {size}")),
            _ if state.offset > size => Some(format!(
                "it holds {} bytes, more than the file's {size}",
                state.offset
            )),
            _ if state.complete && state.offset != size => Some(format!(
                "it is complete at {} bytes, not the file's {size}",
                state.offset
            )),
            _ => None,
        }
    }

    /// `HEAD`, retried through transient failures; obeys the limits it announces.
    async fn ietf_status(&mut self, url: &Url) -> Result<UploadState, ClientError> {
        let http = &self.client.http;
        let state = self.retrying(|| ietf::status(http, url)).await?;
        self.limited(url, &state.limit)?;
        Ok(state)
    }

    /// Takes in what the server allows: a file over `max-size` is refused, chunks shrink to
    /// `max-append-size`.
    fn limited(&mut self, url: &Url, limit: &UploadLimit) -> Result<(), ClientError> {
        if let Some(max_size) = limit.max_size
            && self.source.size > max_size
        {
            return Err(ClientError::TooLarge {
                path: self.source.path.clone(),
                size: self.source.size,
                max_size,
                url: url.to_string(),
            });
        }
        if let Some(most) = limit.max_append_size {
            self.max_append = Some(most.max(1));
        }
        Ok(())
    }

    /// The endpoint's limits (`OPTIONS`), when it tells them.
    async fn ietf_limits(&mut self) -> Result<UploadLimit, ClientError> {
        let http = &self.client.http;
        let endpoint = &self.request.endpoint;
        match self.retrying(|| ietf::limits(http, endpoint)).await {
            Ok(limit) => Ok(limit),
            // A server that does not answer `OPTIONS` says nothing of its limits; the creation's
            // answer may.
            Err(ClientError::Status { status, .. }) => {
                tracing::debug!(%endpoint, %status, "no Upload-Limit from OPTIONS");
                Ok(UploadLimit::default())
            }
            Err(error) => Err(error),
        }
    }

    /// Creates the upload, once the server's limits allow the file, and remembers it before
    /// any byte is sent.
    async fn ietf_create(
        &mut self,
        fingerprint: Option<&Fingerprint>,
    ) -> Result<(Url, UploadState), ClientError> {
        let limit = self.ietf_limits().await?;
        let endpoint = &self.request.endpoint;
        self.limited(endpoint, &limit)?;
        let metadata = self.metadata();
        let http = &self.client.http;
        let size = self.source.size;
        let (url, state) = self
            .retrying(|| ietf::create(http, endpoint, size, &metadata))
            .await?;
        self.save(fingerprint, Some(&url), Vec::new())?;
        self.backoff.progressed();
        self.emit(UploadEvent::Created { url: url.clone() });
        self.progress(0, 0);
        let refused = match self.limited(&url, &state.limit) {
            Ok(()) => self
                .misfit(&state)
                .map(|reason| crate::http::protocol(&url, format!("the new upload: {reason}"))),
            Err(error) => Some(error),
        };
        if let Some(error) = refused {
            // Nothing of the file was sent: the upload goes (if the server lets it).
            if let Err(cancel) = ietf::cancel(http, &url).await {
                tracing::debug!(%url, %cancel, "could not cancel the refused upload");
            }
            self.forget(fingerprint)?;
            return Err(error);
        }
        Ok((url, state))
    }

    /// Appends from the server's offset until it says the upload is complete, recovering from
    /// every retryable failure.
    async fn ietf_send(&mut self, url: &Url, mut state: UploadState) -> Result<(), ClientError> {
        while !state.complete {
            self.source.check_unchanged()?;
            let offset = state.offset;
            let next = match self.ietf_append(url, self.chunk(offset)).await {
                Ok(after) => {
                    self.limited(url, &after.limit)?;
                    if after.offset == offset && !after.complete {
                        self.pause(nothing_stored(url, offset)).await?;
                    }
                    after
                }
                Err(error) if error.recovery() == Recovery::Retry => {
                    self.pause(error).await?;
                    self.ietf_status(url).await?
                }
                Err(error) => return Err(error),
            };
            if let Some(reason) = self.misfit(&next) {
                return Err(crate::http::protocol(url, reason));
            }
            self.confirmed(offset, next.offset);
            state = next;
        }
        Ok(())
    }

    /// One `PATCH` of `range` (offsets of this session), completing the upload when it reaches
    /// the end.
    async fn ietf_append(&self, url: &Url, range: Range<u64>) -> Result<UploadState, ClientError> {
        let sent = SentCounter::default();
        let body = file_range(
            &self.source.canonical_path,
            self.in_file(&range),
            sent.clone(),
            self.rate_limit,
        )
        .await?;
        let append = ietf::Append {
            offset: range.start,
            length: range.end - range.start,
            complete: range.end == self.length(),
            body,
        };
        let request = ietf::append(&self.client.http, url, append);
        self.watch("PATCH", url, range.start, &sent, request).await
    }
}
