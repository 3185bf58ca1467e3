//! Request bodies cut from one shared random buffer, so sending allocates and copies nothing and
//! the client measures the server, not its own memory traffic.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// The bytes every body is made of: a fixed pseudo-random buffer (random so no layer can
/// compress or deduplicate it), reused for every frame of every request.
#[derive(Clone)]
pub struct Pattern(Bytes);

impl Pattern {
    /// The buffer frames are cut from. 1 MiB: big enough that a frame is a real write, small
    /// enough to stay in cache.
    pub const LEN: usize = 1 << 20;

    /// A fresh buffer of [`Pattern::LEN`] pseudo-random bytes (xorshift64: deterministic, and no
    /// dependency for what needs no cryptographic quality).
    pub fn new() -> Self {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut bytes = Vec::with_capacity(Self::LEN);
        while bytes.len() < Self::LEN {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.extend_from_slice(&state.to_le_bytes());
        }
        Pattern(Bytes::from(bytes))
    }

    /// The SHA-256, in hex, of the first `len` bytes [`PatchBody::stream`] sends (the pattern
    /// over and over).
    pub fn sha256_hex(&self, len: u64) -> String {
        let mut hash = Sha256::new();
        let mut left = len;
        while left > 0 {
            let take = left.min(self.0.len() as u64) as usize;
            hash.update(&self.0[..take]);
            left -= take as u64;
        }
        hex::encode(hash.finalize())
    }
}

impl Default for Pattern {
    fn default() -> Self {
        Self::new()
    }
}

/// The body of one request.
pub enum PatchBody {
    /// No bytes (POST, HEAD).
    Empty,
    /// A small body of its own, sent in one frame (S3's XML requests).
    Whole(Option<Bytes>),
    /// `remaining` bytes, in frames that are slices of the pattern.
    Stream {
        /// Where frames are cut from.
        pattern: Bytes,
        /// Bytes still to send.
        remaining: u64,
    },
    /// A few bytes, then nothing more until the request is dropped: a client that went quiet in
    /// the middle of its body.
    Stall {
        /// The bytes sent before going quiet.
        head: Option<Bytes>,
        /// Told when the body is polled past its head, i.e. the head has been handed to the
        /// connection and the request is now being held.
        stalled: Option<oneshot::Sender<()>>,
    },
}

impl PatchBody {
    /// `len` bytes of the pattern, repeated as needed.
    pub fn stream(pattern: &Pattern, len: u64) -> Self {
        PatchBody::Stream {
            pattern: pattern.0.clone(),
            remaining: len,
        }
    }

    /// `bytes`, in one frame.
    pub fn bytes(bytes: Bytes) -> Self {
        PatchBody::Whole(Some(bytes))
    }

    /// The first `head` bytes of the pattern, then a stall; `stalled` fires once they are sent.
    pub fn stall(pattern: &Pattern, head: usize, stalled: oneshot::Sender<()>) -> Self {
        PatchBody::Stall {
            head: Some(pattern.0.slice(..head.min(Pattern::LEN))),
            stalled: Some(stalled),
        }
    }
}

impl Body for PatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            PatchBody::Empty => Poll::Ready(None),
            PatchBody::Whole(bytes) => {
                Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes))))
            }
            PatchBody::Stream { remaining: 0, .. } => Poll::Ready(None),
            PatchBody::Stream { pattern, remaining } => {
                let len = (*remaining).min(pattern.len() as u64);
                *remaining -= len;
                // `len` fits: it is at most the pattern's length.
                let frame = pattern.slice(..len as usize);
                Poll::Ready(Some(Ok(Frame::data(frame))))
            }
            PatchBody::Stall { head, stalled } => {
                if let Some(head) = head.take() {
                    return Poll::Ready(Some(Ok(Frame::data(head))));
                }
                if let Some(stalled) = stalled.take() {
                    // The receiver may have given up waiting; holding goes on regardless.
                    let _ = stalled.send(());
                }
                // No waker is kept on purpose: nothing ever wakes a stalled body. Dropping the
                // connection ends it.
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(
            self,
            PatchBody::Empty | PatchBody::Whole(None) | PatchBody::Stream { remaining: 0, .. }
        )
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PatchBody::Empty | PatchBody::Whole(None) => SizeHint::with_exact(0),
            PatchBody::Whole(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            PatchBody::Stream { remaining, .. } => SizeHint::with_exact(*remaining),
            // The request's Content-Length header states the promised length.
            PatchBody::Stall { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_stream_body_sends_exactly_its_length_across_pattern_repeats() {
        let pattern = Pattern::new();
        let len = 2 * Pattern::LEN as u64 + 5;
        let body = PatchBody::stream(&pattern, len);
        assert_eq!(body.size_hint().exact(), Some(len));
        let bytes = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(bytes.len() as u64, len);
        assert_eq!(bytes[Pattern::LEN..Pattern::LEN + 5], pattern.0[..5]);
    }
}
