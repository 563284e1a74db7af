//! `hatch vm cp`, `hatch vm ls`, `hatch vm rm`: files in a guest through
//! its agent (`/vms/{id}/files`), streamed both ways.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Method;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::http::{segment, Client, Reply};
use super::output;
use super::{CliError, ClientArgs};

#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// LOCAL (or - for standard input) to copy into the guest, or ID:/path to copy out.
    source: String,
    /// ID:/path in the guest (a path ending in / gets the source's name), or
    /// LOCAL (a directory gets the source's name; - for standard output).
    destination: String,
    /// Permission bits (octal) of the file written in the guest [default: 0644].
    #[arg(long)]
    mode: Option<String>,
}

/// `ID:/path`: a VM's file. Anything else is local.
#[derive(Debug, PartialEq, Eq)]
pub struct Remote {
    pub vm: String,
    pub path: String,
}

impl Remote {
    pub fn parse(text: &str) -> Option<Remote> {
        let (vm, path) = text.split_once(':')?;
        (!vm.is_empty() && !vm.contains('/') && path.starts_with('/')).then(|| Remote {
            vm: vm.to_string(),
            path: path.to_string(),
        })
    }

    fn files_path(&self, extra: &str) -> String {
        format!("/vms/{}/files?path={}{extra}", segment(&self.vm), segment(&self.path))
    }
}

/// `ID:/path` or a usage error naming `what`.
pub fn remote(text: &str, what: &str) -> Result<Remote, CliError> {
    Remote::parse(text).ok_or_else(|| CliError::Usage(format!("{what} {text:?}: expected ID:/absolute/path")))
}

pub async fn cp(client: &Client, args: &CpArgs) -> Result<(), CliError> {
    match (Remote::parse(&args.source), Remote::parse(&args.destination)) {
        (None, Some(to)) => upload(client, &args.source, to, args.mode.as_deref()).await,
        (Some(from), None) => {
            if args.mode.is_some() {
                return Err(CliError::Usage("--mode applies to copies into a VM".into()));
            }
            download(client, from, &args.destination).await
        }
        (Some(_), Some(_)) => Err(CliError::Usage(
            "copy between VMs through a local file: hatch vm cp ID:/path LOCAL, then hatch vm cp LOCAL ID2:/path"
                .into(),
        )),
        (None, None) => Err(CliError::Usage(format!(
            "one of {:?} and {:?} must be a VM's file: ID:/absolute/path",
            args.source, args.destination
        ))),
    }
}

async fn upload(client: &Client, local: &str, mut to: Remote, mode: Option<&str>) -> Result<(), CliError> {
    let reader: Box<dyn AsyncRead + Unpin + Send + Sync> = if local == "-" {
        Box::new(tokio::io::stdin())
    } else {
        let file = tokio::fs::File::open(local)
            .await
            .map_err(|e| CliError::Local(format!("{local}: {e}")))?;
        if to.path.ends_with('/') {
            let name = Path::new(local).file_name().and_then(|n| n.to_str());
            to.path
                .push_str(name.ok_or_else(|| CliError::Usage(format!("{local}: no file name to copy to")))?);
        }
        Box::new(file)
    };
    let mode = mode.map(|mode| format!("&mode={}", segment(mode))).unwrap_or_default();
    let response = client
        .open_body(
            Method::PUT,
            &to.files_path(&mode),
            Some("application/octet-stream"),
            BodyExt::boxed(StreamBody::new(chunks(reader))),
        )
        .await?;
    Reply::read(response).await?.success()?;
    Ok(())
}

/// A reader as body frames of up to 64 KiB.
fn chunks(
    reader: Box<dyn AsyncRead + Unpin + Send + Sync>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync {
    futures_util::stream::try_unfold(reader, |mut reader| async move {
        let mut buffer = vec![0u8; 64 * 1024];
        let n = reader.read(&mut buffer).await?;
        buffer.truncate(n);
        Ok((n > 0).then(|| (Frame::data(Bytes::from(buffer)), reader)))
    })
}

async fn download(client: &Client, from: Remote, local: &str) -> Result<(), CliError> {
    let response = client.open(Method::GET, &from.files_path(""), None).await?;
    if !response.status().is_success() {
        Reply::read(response).await?.success()?;
        return Ok(());
    }
    let mode = response
        .headers()
        .get("x-file-mode")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .unwrap_or(0o644);
    let mut body = response.into_body().into_data_stream();
    if local == "-" {
        let mut out = tokio::io::stdout();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| CliError::Http(e.to_string()))?;
            out.write_all(&chunk)
                .await
                .map_err(|e| CliError::Local(e.to_string()))?;
        }
        return out.flush().await.map_err(|e| CliError::Local(e.to_string()));
    }
    let mut target = PathBuf::from(local);
    if target.is_dir() {
        let name = Path::new(&from.path).file_name().unwrap_or_else(|| "file".as_ref());
        target.push(name);
    }
    // Written beside the target and renamed over it: never half a file.
    let partial = target.with_file_name(format!(
        ".{}.hatch-partial",
        target.file_name().map_or("file".into(), |n| n.to_string_lossy())
    ));
    let local_error = |e: std::io::Error| CliError::Local(format!("{}: {e}", target.display()));
    let written = async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode & 0o777)
            .open(&partial)
            .await?;
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk.map_err(std::io::Error::other)?).await?;
        }
        file.sync_all().await?;
        tokio::fs::rename(&partial, &target).await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    written.map_err(local_error)
}

pub async fn ls(client: &Client, args: &ClientArgs, target: &str) -> Result<(), CliError> {
    let dir = remote(target, "ls")?;
    let listing: Value = client.call(Method::GET, &dir.files_path("&list=true"), None).await?;
    output::show(args.json, &listing, |listing| {
        let text = |e: &Value, key: &str| match &e[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let rows: Vec<Vec<String>> = listing["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let mode = e["mode"].as_u64().unwrap_or(0);
                vec![
                    format!("{:04o}", mode & 0o7777),
                    text(e, "type"),
                    text(e, "size"),
                    format!("{}:{}", text(e, "uid"), text(e, "gid")),
                    modified(e["modified"].as_i64()),
                    text(e, "name"),
                ]
            })
            .collect();
        output::table(&["MODE", "TYPE", "SIZE", "OWNER", "MODIFIED", "NAME"], &rows);
    });
    Ok(())
}

fn modified(seconds: Option<i64>) -> String {
    seconds
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string())
}

pub async fn rm(client: &Client, target: &str) -> Result<(), CliError> {
    let file = remote(target, "rm")?;
    client
        .request(Method::DELETE, &file.files_path(""), None)
        .await?
        .success()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_are_id_colon_absolute_path() {
        assert_eq!(
            Remote::parse("vm-1:/etc/hostname"),
            Some(Remote {
                vm: "vm-1".into(),
                path: "/etc/hostname".into()
            })
        );
        for local in ["./a:/b", "file.txt", "vm-1:relative", ":/x", "/abs/path", "-"] {
            assert_eq!(Remote::parse(local), None, "{local:?}");
        }
    }
}
