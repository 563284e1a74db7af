//! `hatch events [-f] [--vm ID] [--since N] [--json]`: the event log, one
//! line per event; `-f` goes on printing events as they happen.

use std::io::Write;

use http_body_util::BodyExt;
use serde_json::Value;

use super::http::segment;
use super::CliError;
use super::ClientArgs;

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Keep printing events as they happen.
    #[arg(short, long)]
    pub follow: bool,
    /// Only this VM's events.
    #[arg(long)]
    pub vm: Option<String>,
    /// Only events after this id (the first column).
    #[arg(long)]
    pub since: Option<u64>,
}

pub async fn run(args: &EventsArgs) -> Result<(), CliError> {
    let client = args.client.client()?;
    let mut path = format!("/events?follow={}", args.follow);
    if let Some(vm) = &args.vm {
        path.push_str(&format!("&vm={}", segment(vm)));
    }
    if let Some(since) = args.since {
        path.push_str(&format!("&since={since}"));
    }
    let response = client.open_stream(&path).await?;
    let mut stdout = std::io::stdout();
    each_message(response, |block| {
        let Some(line) = event_line(block, args.client.json) else {
            return Ok(true);
        };
        match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
            Ok(()) => Ok(true),
            // The reader (`head`) has had enough.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(CliError::Http(format!("writing: {e}"))),
        }
    })
    .await
}

/// Calls `each` with every server-sent message of `response` (its text up
/// to the blank line) as it arrives, until the stream ends or `each`
/// answers `false`.
pub async fn each_message(
    mut response: hyper::Response<hyper::body::Incoming>,
    mut each: impl FnMut(&str) -> Result<bool, CliError>,
) -> Result<(), CliError> {
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = response.body_mut().frame().await {
        let frame = frame.map_err(|e| CliError::Http(e.to_string()))?;
        let Some(data) = frame.data_ref() else { continue };
        pending.extend_from_slice(data);
        while let Some(end) = find_blank_line(&pending) {
            let block: Vec<u8> = pending.drain(..end).collect();
            if !each(&String::from_utf8_lossy(&block))? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The JSON of one message's `data:` lines; None for comments (keep-alives).
pub fn message_data(block: &str) -> Option<String> {
    let data: Vec<&str> = block
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    (!data.is_empty()).then(|| data.join("\n"))
}

/// The end (past the blank line) of the first complete SSE message.
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// One message as a line: its JSON, or `id at vm kind from→to reason`.
/// Comments (keep-alives) print nothing.
fn event_line(block: &str, json: bool) -> Option<String> {
    let data = message_data(block)?;
    if json {
        return Some(data);
    }
    let event: Value = serde_json::from_str(&data).ok()?;
    let text = |f: &str| event[f].as_str().map(str::to_string);
    let states = states(&event);
    Some(
        format!(
            "{} {} {} {} {} {}",
            event["id"],
            text("at").unwrap_or_default(),
            text("vm_id").unwrap_or_else(|| "host".into()),
            text("kind").unwrap_or_default(),
            states,
            text("reason").unwrap_or_default()
        )
        .trim_end()
        .to_string(),
    )
}

/// `from→to` for a state change, else the state the event left the VM in.
fn states(event: &Value) -> String {
    let text = |f: &str| event[f].as_str().map(str::to_string);
    match event["kind"].as_str() {
        Some("state") => format!(
            "{}→{}",
            text("from_state").unwrap_or_else(|| "-".into()),
            text("to_state").unwrap_or_else(|| "deleted".into())
        ),
        _ => text("to_state").unwrap_or_else(|| "-".into()),
    }
}

/// A message as the phase it reports, for a spinner: `running→snapshotting`,
/// or the kind and reason of other events.
pub fn phase(block: &str) -> Option<String> {
    let event: Value = serde_json::from_str(&message_data(block)?).ok()?;
    match event["kind"].as_str()? {
        "state" => Some(states(&event)),
        kind => Some(
            format!("{kind} {}", event["reason"].as_str().unwrap_or_default())
                .trim_end()
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_becomes_one_line() {
        let block = "id: 7\nevent: state\ndata: {\"id\":7,\"vm_id\":\"vm-1\",\"kind\":\"state\",\"from_state\":\"creating\",\"to_state\":\"running\",\"reason\":null,\"at\":\"T\"}\n\n";
        assert_eq!(event_line(block, false).unwrap(), "7 T vm-1 state creating→running");
        assert!(event_line(block, true).unwrap().starts_with("{\"id\":7"));
        assert_eq!(event_line(":\n\n", false), None);
        assert_eq!(find_blank_line(b"id: 1\ndata: x\n\nid: 2"), Some(15));
        assert_eq!(phase(block).unwrap(), "creating→running");
        assert_eq!(phase(":\n\n"), None);
    }
}
