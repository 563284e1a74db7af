//! The proxy's own HTTP/1.1 exchange with a guest, for ordinary (not
//! upgrade) requests: the request head and body are written to the pooled
//! connection and the response head parsed in the client connection's
//! task, and the response body ([`ResponseBody`]) reads the connection
//! directly. hyper's client would hand each request to a connection task of
//! its own over a channel and the body back over another; those hand-offs
//! and the wake-ups between the two tasks cost more CPU per request than
//! the rest of the proxy's own work.
//!
//! ```text
//! write head (one write when bodiless) ─▶ write body (Content-Length as sent, else chunked)
//!   ─▶ read head (skip 1xx; refuse > 64 KiB, > 100 fields, ambiguous framing;
//!                 504 when it has not come within the upstream timeout)
//!   ─▶ ResponseBody: Content-Length / chunked / until close / none
//!        └ read to its end, HTTP/1.1, no `close`, nothing extra → back to the pool
//! ```
//!
//! The answer is watched for while the request body goes out (as nginx
//! does): a guest that answers before it has read the whole body (a 413, or
//! a long answer it writes before reading on) gets that answer passed on;
//! the rest of the body is not sent and the connection is not reused.

mod body;
mod chunked;
mod fields;
mod head;

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::deadline::Deadline;

pub use body::BodyError;
pub(crate) use body::ResponseBody;
pub use chunked::ChunkError;
pub(crate) use fields::{FieldSpans, RawFields, Span};
pub use head::HeadError;
pub(crate) use head::{
    encode_request, parse_response, put_field, RequestFraming, RequestHead, ResponseHead, MAX_HEADERS,
};

/// Bytes read from the guest at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Interim (1xx) responses skipped before the final one; more is a guest
/// that never answers.
const MAX_INTERIM: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("writing the request head failed: {0}")]
    HeadWrite(#[source] std::io::Error),
    #[error("writing the request body failed: {0}")]
    Write(#[source] std::io::Error),
    #[error("the client's request body failed: {0}")]
    ClientBody(#[source] hyper::Error),
    #[error("the connection closed before any answer")]
    Dropped(#[source] Option<std::io::Error>),
    #[error("reading the response head failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("the connection closed in the middle of the response head")]
    Truncated,
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error("more than {MAX_INTERIM} interim responses")]
    TooManyInterim,
    #[error("no answer within {0:?} of the request")]
    NoAnswer(Duration),
}

impl ExchangeError {
    /// The request head did not go out whole (a guest cannot act on it)
    /// and the body is untouched: any request can go to another connection.
    pub(crate) fn unsent(&self) -> bool {
        matches!(self, ExchangeError::HeadWrite(_))
    }

    /// Nothing came back from the guest: a request that may be sent twice
    /// can be sent again on another connection.
    pub(crate) fn nothing_answered(&self) -> bool {
        matches!(self, ExchangeError::HeadWrite(_) | ExchangeError::Dropped(_))
    }
}

/// One connection to a guest's port, with what has been read from it but
/// not yet consumed.
pub(crate) struct Connection {
    stream: TcpStream,
    buf: BytesMut,
    /// Bounds the wait for each answer; made at the first exchange.
    answer_deadline: Option<Deadline>,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            answer_deadline: None,
        }
    }

    /// Whether an idle connection can carry a request: the guest has
    /// neither closed it nor sent anything unasked. Costs a system call
    /// only when the socket was reported readable since it was last drained.
    pub(crate) fn is_idle_and_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                matches!(self.stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        make_room(&mut self.buf);
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.stream), cx, &mut self.buf)
    }

    /// Sends a request (`head` from [`encode_request`], then `body` if any)
    /// and reads the final response's head, which must have come within
    /// `answer_within` of the whole request being sent. A body is consumed
    /// only once the head went out, so after a failed head write it is
    /// still there for another connection.
    pub(crate) async fn exchange(
        &mut self,
        head: &[u8],
        body: &mut Option<(Incoming, RequestFraming)>,
        head_request: bool,
        answer_within: Duration,
    ) -> Result<ResponseHead, ExchangeError> {
        self.stream.write_all(head).await.map_err(ExchangeError::HeadWrite)?;
        let deadline = self.answer_deadline.get_or_insert_with(|| Deadline::new(answer_within));
        match body.take() {
            None => {
                within(
                    deadline,
                    answer_within,
                    read_head(&mut self.stream, &mut self.buf, head_request),
                )
                .await
            }
            // Boxed: most requests have no body, and every request's future
            // would otherwise carry (and move) room for the upload's.
            Some((request_body, framing)) => {
                Box::pin(self.send_body_and_read_head(request_body, framing, head_request, answer_within)).await
            }
        }
    }

    /// The answer is watched for while the body goes out (as nginx does):
    /// a guest may answer before it has read it all (413, or an answer it
    /// streams before reading on), and waiting for the body to be written
    /// first would then stall both sides. An answer that comes first ends
    /// the upload, on a connection not reused.
    async fn send_body_and_read_head(
        &mut self,
        request_body: Incoming,
        framing: RequestFraming,
        head_request: bool,
        answer_within: Duration,
    ) -> Result<ResponseHead, ExchangeError> {
        let deadline = self.answer_deadline.get_or_insert_with(|| Deadline::new(answer_within));
        let (mut reader, mut writer) = self.stream.split();
        let write = body::write_request_body(&mut writer, request_body, framing);
        let read = read_head(&mut reader, &mut self.buf, head_request);
        tokio::pin!(write, read);
        let mut answer = tokio::select! {
            biased;
            written = &mut write => match written {
                Ok(()) => return within(deadline, answer_within, read).await,
                // Closed while the body went out: an answer sent before the
                // close is passed on.
                Err(ExchangeError::Write(error)) => read.await.map_err(|_| ExchangeError::Write(error))?,
                Err(error) => return Err(error),
            },
            answer = &mut read => answer?,
        };
        answer.keep_alive = false;
        Ok(answer)
    }
}

/// What `reading` gives, unless the answer's head did not come within `limit`.
async fn within<F>(deadline: &mut Deadline, limit: Duration, reading: F) -> Result<ResponseHead, ExchangeError>
where
    F: std::future::Future<Output = Result<ResponseHead, ExchangeError>>,
{
    deadline
        .within(limit, reading)
        .await
        .unwrap_or(Err(ExchangeError::NoAnswer(limit)))
}

/// Reads from `reader` into `buf` until the final response's head is there
/// (interim 1xx ones are skipped) and returns it, consumed from `buf`.
async fn read_head(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<ResponseHead, ExchangeError> {
    let mut interim = 0;
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse_response(buf, head_request)? {
                if !head.status.is_informational() {
                    return Ok(head);
                }
                interim += 1;
                if interim > MAX_INTERIM {
                    return Err(ExchangeError::TooManyInterim);
                }
                continue;
            }
        }
        let answered = interim > 0 || !buf.is_empty();
        make_room(buf);
        match reader.read_buf(buf).await {
            Ok(0) if answered => return Err(ExchangeError::Truncated),
            Ok(0) => return Err(ExchangeError::Dropped(None)),
            Ok(_) => {}
            Err(error) if answered => return Err(ExchangeError::Read(error)),
            Err(error) => return Err(ExchangeError::Dropped(Some(error))),
        }
    }
}

/// Room for the next read: at least a quarter of [`READ_CHUNK`], grown by a
/// whole one when less is left.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}
