//! Response bodies the proxy sends: streamed upstream bodies that keep their
//! exchange counted as active until they end, and small JSON errors.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};

use prometheus_client::metrics::counter::Counter;

use super::activity::ActivityGuard;

/// What every proxy response carries.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Why a response body broke off (the guest's connection, usually).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An upstream body passed through frame by frame (never buffered whole),
/// holding the exchange's activity guard until the last frame or an error.
pub(crate) struct TrackedBody<B> {
    inner: B,
    guard: Option<ActivityGuard>,
    /// Counts the bytes passed back (`hatch_proxy_response_bytes_total`).
    bytes: Option<Counter>,
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(bytes)) = (&polled, &self.bytes) {
            if let Some(data) = frame.data_ref() {
                bytes.inc_by(data.len() as u64);
            }
        }
        match &polled {
            // The last data frame of a sized body may be the end: hyper
            // then drops the body without polling again.
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.guard = None,
            Poll::Ready(Some(Ok(_))) => {
                if let Some(guard) = self.guard.as_mut() {
                    guard.tick();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.guard = None,
            Poll::Pending => {}
        }
        polled.map(|frame| frame.map(|result| result.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pub(crate) fn tracked<B>(inner: B, guard: ActivityGuard, bytes: Option<Counter>) -> ProxyBody
where
    B: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    TrackedBody {
        inner,
        guard: Some(guard),
        bytes,
    }
    .boxed()
}

pub(crate) fn empty() -> ProxyBody {
    full(Bytes::new())
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// `{"error": message}` with `status`, like the REST API's errors.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// 503 with `Retry-After` in whole seconds (at least 1) when given.
pub(crate) fn unavailable(message: &str, retry_after: Option<Duration>) -> Response<ProxyBody> {
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, message);
    if let Some(retry_after) = retry_after {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let cases = [
            (Duration::ZERO, "1"),
            (Duration::from_millis(1500), "2"),
            (Duration::from_secs(30), "30"),
        ];
        for (given, expected) in cases {
            let response = unavailable("asleep", Some(given));
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[RETRY_AFTER], expected);
        }
        assert!(unavailable("stopped", None).headers().get(RETRY_AFTER).is_none());
    }
}
