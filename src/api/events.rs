//! `GET /events`: the event log as Server-Sent Events. Each message is
//! one event: `id:` its cursor, `event:` its kind, `data:` the event as
//! JSON. A reader resumes after a cursor (`Last-Event-ID`, or `?since=`;
//! `?since=now` is the newest event), gets everything recorded after it,
//! then follows live (the log is polled, so a follower survives daemon
//! restarts by reconnecting with its cursor).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::json::ApiQuery;
use super::owner;
use super::AppState;
use crate::orch::Orchestrator;
use crate::store::{EventFilter, EventKind, LogEvent, Store};

/// How often a follower looks for new events.
const POLL: Duration = Duration::from_millis(200);
/// How often an idle stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events read from the log at a time.
const BATCH: u32 = 500;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this VM's events.
    pub vm: Option<String>,
    /// Start after this cursor (an event id; 0: from the beginning; `now`:
    /// after the newest event recorded, for a reader that reads the
    /// present state itself and wants only what happens next).
    pub since: Option<String>,
    /// `false`: end once the recorded events are sent (default `true`).
    pub follow: Option<String>,
}

fn cursor(field: &str, text: &str) -> ApiResult<i64> {
    text.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("{field}: expected an event id (a whole number ≥ 0), got {text:?}"),
        )
    })
}

pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let follow = match query.follow.as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(ApiError::invalid(
                "follow",
                format!("follow: expected true or false, got {other:?}"),
            ))
        }
    };
    let since = match query.since.as_deref() {
        Some("now") => Some(state.store.run(|store| store.last_event_id()).await?),
        other => other.map(|s| cursor("since", s)).transpose()?,
    };
    let last = match headers.get("last-event-id") {
        None => None,
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| ApiError::invalid("Last-Event-ID", "Last-Event-ID: not text"))?;
            Some(cursor("Last-Event-ID", text)?)
        }
    };
    if let Some(vm) = &query.vm {
        owner::vm(&state, &caller, vm).await?;
    }
    let filter = EventFilter {
        vm_id: query.vm.clone(),
        owner_key_id: (!caller.is_admin()).then(|| caller.id().to_string()),
    };
    // A reconnecting browser repeats the URL's `since`: its header wins.
    let tail = Tail {
        store: state.store.clone(),
        orch: Arc::downgrade(&state.orch),
        filter,
        cursor: last.or(since).unwrap_or(0),
        pending: VecDeque::new(),
        follow,
        done: false,
    };
    Ok(Sse::new(tail.into_stream()).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

struct Tail {
    store: Store,
    orch: Weak<Orchestrator>,
    filter: EventFilter,
    cursor: i64,
    pending: VecDeque<LogEvent>,
    follow: bool,
    /// The one VM followed was deleted: nothing more will come.
    done: bool,
}

impl Tail {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures_util::stream::unfold(self, |mut tail| async move {
            loop {
                if let Some(event) = tail.pending.pop_front() {
                    tail.cursor = event.id;
                    if tail.filter.vm_id.is_some() && event.kind == EventKind::State && event.to_state.is_none() {
                        tail.done = true;
                        tail.pending.clear();
                    }
                    return Some((Ok(message(&event)), tail));
                }
                if tail.done || tail.orch.upgrade().is_none() {
                    return None;
                }
                let (cursor, filter) = (tail.cursor, tail.filter.clone());
                let read = tail.store.run(move |store| store.events_after(cursor, &filter, BATCH));
                match read.await {
                    Ok(batch) if !batch.is_empty() => tail.pending.extend(batch),
                    Ok(_) if !tail.follow => return None,
                    Ok(_) => tokio::time::sleep(POLL).await,
                    Err(error) => {
                        tracing::warn!(%error, "reading the event log failed");
                        if !tail.follow {
                            return None;
                        }
                        tokio::time::sleep(POLL).await;
                    }
                }
            }
        })
    }
}

fn message(event: &LogEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_string());
    Event::default()
        .id(event.id.to_string())
        .event(event.kind.as_str())
        .data(data)
}
