//! The guest's response body, read straight from the upstream connection
//! inside the client connection's task (no connection task, no channel in
//! between), and the client's request body written to the guest.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::chunked::{ChunkError, ChunkedDecoder, Decoded};
use super::head::{Framing, RequestFraming};
use super::{Connection, ExchangeError};
use crate::proxy::upstream::Lent;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the guest's response body failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("the guest closed the connection before the end of the response body")]
    Truncated,
    #[error("the guest's chunked body is invalid: {0}")]
    Chunked(#[from] ChunkError),
}

enum Remaining {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A response body coming over a lent upstream connection. Read to its end
/// (and reusable) the connection goes back to the pool; dropped before, or
/// after a framing that leaves it unusable, the connection is closed.
pub(crate) struct ResponseBody {
    connection: Option<Connection>,
    remaining: Remaining,
    keep_alive: bool,
    home: Option<Lent>,
}

impl ResponseBody {
    pub(crate) fn new(connection: Connection, framing: Framing, keep_alive: bool, home: Lent) -> Self {
        let remaining = match framing {
            Framing::Length(length) => Remaining::Length(length),
            Framing::Chunked => Remaining::Chunked(ChunkedDecoder::default()),
            Framing::UntilClose => Remaining::UntilClose,
        };
        let mut body = Self {
            connection: Some(connection),
            remaining,
            keep_alive,
            home: Some(home),
        };
        if let Remaining::Length(0) = body.remaining {
            body.finish();
        }
        body
    }

    /// The body ended: the connection goes home if it can carry another
    /// exchange, which it cannot when the guest sent more than this
    /// response (a second answer nobody asked for must not become the next
    /// request's).
    fn finish(&mut self) {
        self.remaining = Remaining::Done;
        let (Some(connection), Some(home)) = (self.connection.take(), self.home.take()) else {
            return;
        };
        if self.keep_alive && connection.buf.is_empty() {
            home.give_back(connection);
        }
    }

    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.remaining = Remaining::Done;
        self.connection = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let buf = &mut connection.buf;
            let data = match &mut this.remaining {
                Remaining::Done => None,
                Remaining::Length(left) if !buf.is_empty() => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= take as u64;
                    Some(buf.split_to(take).freeze())
                }
                Remaining::Chunked(decoder) => match decoder.decode(buf) {
                    Ok(Decoded::Data(data)) => Some(data),
                    Ok(Decoded::Done) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => None,
                    Err(error) => return this.fail(error.into()),
                },
                Remaining::UntilClose if !buf.is_empty() => Some(buf.split().freeze()),
                Remaining::Length(_) | Remaining::UntilClose => None,
            };
            if let Some(data) = data {
                if let Remaining::Length(0) = this.remaining {
                    this.finish();
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if let Remaining::Done = this.remaining {
                return Poll::Ready(None);
            }
            match ready!(connection.poll_fill(cx)) {
                Ok(0) if matches!(this.remaining, Remaining::UntilClose) => {
                    this.remaining = Remaining::Done;
                    this.connection = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(BodyError::Truncated),
                Ok(_) => {}
                Err(error) => return this.fail(BodyError::Read(error)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.remaining, Remaining::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Remaining::Length(left) => SizeHint::with_exact(left),
            Remaining::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Sends the client's body after the head, as `framing` says.
pub(super) async fn write_request_body(
    writer: &mut (impl AsyncWrite + Unpin),
    mut body: Incoming,
    framing: RequestFraming,
) -> Result<(), ExchangeError> {
    let chunked = framing == RequestFraming::Chunked;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(ExchangeError::ClientBody)?.into_data() else {
            // Trailers are not forwarded.
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            let size = Bytes::from(format!("{:x}\r\n", data.len()));
            let mut frame = size.chain(data).chain(&b"\r\n"[..]);
            writer.write_all_buf(&mut frame).await
        } else {
            writer.write_all(&data).await
        }
        .map_err(ExchangeError::Write)?;
    }
    if chunked {
        writer.write_all(b"0\r\n\r\n").await.map_err(ExchangeError::Write)?;
    }
    Ok(())
}
