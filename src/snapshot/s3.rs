//! Artefacts in an S3-compatible bucket, through the `object_store` crate.
//!
//! Uploads stream the file in parts (multipart upload, a few parts in
//! flight), so a memory artefact of hundreds of MiB never sits in RAM, and
//! an object becomes visible only when its upload completes. Downloads
//! stream into an [`AtomicFile`], or, for a restore, straight into the
//! reader that hashes and unpacks them ([`SnapshotStore::open`]). Requests use path-style addressing
//! (`<endpoint>/<bucket>/<key>`), which every S3-compatible server speaks;
//! plain HTTP is allowed when the configured endpoint is an `http://` URL.
//!
//! Several hosts may share a bucket: each keeps its objects under its own
//! prefix and lists, deletes and sweeps only there. Whether the bucket
//! answers is probed with one quick, unretried request, at start-up and
//! again before snapshots and restores (a recent "it works" is reused), so
//! an unreachable bucket is reported at once and a recovered one is used
//! without a restart.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt as _, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::store::{age_of, is_orphan, validate_delete_prefix, validate_key, validate_prefix, StorageHealth};
use super::{blocking, ObjectReader, SnapshotError, SnapshotStore};
use crate::config::S3Config;
use crate::sys::atomic_file::AtomicFile;

/// Size of one uploaded part. S3 wants at least 5 MiB for every part but
/// the last; files up to this size go up in a single request.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once: bounds memory use to about this many parts.
const PARTS_IN_FLIGHT: usize = 3;

/// How long the bucket's answer that it works is trusted before
/// snapshots and restores ask again.
const TRUST_OK_FOR: Duration = Duration::from_secs(30);
/// How long any answer is reused for `GET /healthz`.
const HEALTH_REUSED_FOR: Duration = Duration::from_secs(5);
/// A probe is one quick request, never retried: an unreachable bucket must
/// be reported at once, not after the upload client's minute of retries.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A bucket on S3 or an S3-compatible server. Every object of this store
/// lives under `<prefix>/` (HATCH_S3_PREFIX, by default the host id), so
/// several hosts can share one bucket; keys given to and returned by the
/// [`SnapshotStore`] methods are relative to it.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Arc<AmazonS3>,
    /// The same bucket without retries and with a short timeout, for probes.
    probe: Arc<AmazonS3>,
    bucket: String,
    /// Where requests go, for messages (`AWS` when no endpoint is set).
    endpoint: String,
    prefix: String,
    last_probe: Arc<Mutex<Option<Probe>>>,
}

/// The last answer to a probe.
#[derive(Debug, Clone)]
struct Probe {
    at: Instant,
    /// The error's text when the bucket did not answer.
    result: Result<(), String>,
}

impl S3Store {
    /// Builds a client for the configured bucket, with this host's objects
    /// under `prefix` (a valid key, see [`validate_key`]); no request is made
    /// yet (see [`S3Store::check_reachable`]).
    pub fn new(config: &S3Config, prefix: &str) -> Result<S3Store, SnapshotError> {
        validate_key(prefix)?;
        let endpoint = config.endpoint.clone().unwrap_or_else(|| "AWS".to_string());
        let build = |retry: RetryConfig, options: ClientOptions| {
            client(config, retry, options).map_err(|source| SnapshotError::S3Config {
                bucket: config.bucket.clone(),
                endpoint: endpoint.clone(),
                source: Box::new(source),
            })
        };
        let client = build(
            RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            },
            // A whole part must fit in one request's time budget.
            ClientOptions::new().with_timeout(Duration::from_secs(300)),
        )?;
        let probe = build(
            RetryConfig {
                max_retries: 0,
                retry_timeout: PROBE_TIMEOUT,
                ..RetryConfig::default()
            },
            ClientOptions::new()
                .with_timeout(PROBE_TIMEOUT)
                .with_connect_timeout(PROBE_TIMEOUT),
        )?;
        Ok(S3Store {
            client: Arc::new(client),
            probe: Arc::new(probe),
            bucket: config.bucket.clone(),
            endpoint,
            prefix: prefix.to_string(),
            last_probe: Arc::default(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix of this store's objects (without the trailing `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One quick listing request (never retried): proves the endpoint
    /// answers, the credentials are accepted and the bucket exists. The
    /// answer is remembered for [`SnapshotStore::ensure_available`] and
    /// [`SnapshotStore::health`].
    pub async fn check_reachable(&self) -> Result<(), SnapshotError> {
        let root = ObjectPath::from(self.prefix.as_str());
        let answer = match tokio::time::timeout(PROBE_TIMEOUT * 2, self.probe.list_with_delimiter(Some(&root))).await {
            Ok(answer) => answer.map(|_| ()),
            Err(_) => Err(object_store::Error::Generic {
                store: "S3",
                source: format!("no answer within {}s", (PROBE_TIMEOUT * 2).as_secs()).into(),
            }),
        };
        let answer = answer.map_err(|source| SnapshotError::S3Unreachable {
            bucket: self.bucket.clone(),
            endpoint: self.endpoint.clone(),
            source: Box::new(source),
        });
        self.remember(Some(Probe {
            at: Instant::now(),
            result: answer.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        }));
        answer
    }

    fn remember(&self, probe: Option<Probe>) {
        *self.last_probe.lock().unwrap_or_else(|e| e.into_inner()) = probe;
    }

    fn last_probe(&self) -> Option<Probe> {
        self.last_probe.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The bucket key of the store key `key`.
    fn full_key(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    fn object_error(&self, op: &'static str, key: &str, source: object_store::Error) -> SnapshotError {
        if !matches!(source, object_store::Error::NotFound { .. }) {
            // Ask the bucket again before trusting it next time.
            self.remember(None);
        }
        match source {
            object_store::Error::NotFound { .. } => SnapshotError::NotFound { key: key.to_string() },
            source => SnapshotError::ObjectStore {
                op,
                bucket: self.bucket.clone(),
                key: key.to_string(),
                source: Box::new(source),
            },
        }
    }

    /// Streams `local_path` up in parts; aborts the upload on any error so
    /// no half object (or orphaned part) is left.
    async fn put_multipart(
        &self,
        key: &str,
        location: &ObjectPath,
        file: &mut tokio::fs::File,
        local_path: &Path,
    ) -> Result<(), SnapshotError> {
        let upload = self
            .client
            .put_multipart(location)
            .await
            .map_err(|e| self.object_error("upload", key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let sent = async {
            loop {
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.object_error("upload", key, e))?;
                let part = read_part(file, local_path).await?;
                if part.is_empty() {
                    return Ok(());
                }
                writer.put(part.freeze());
            }
        }
        .await;
        match sent {
            Ok(()) => writer
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| self.object_error("upload", key, e)),
            Err(error) => {
                if let Err(abort_error) = writer.abort().await {
                    tracing::warn!(%key, %abort_error, "aborting a failed multipart upload failed");
                }
                Err(error)
            }
        }
    }

    /// This store's objects whose (relative) key starts with `prefix` (a
    /// plain string prefix), unsorted, as (relative key, metadata).
    async fn objects_with_prefix(&self, prefix: &str) -> Result<Vec<(String, ObjectMeta)>, SnapshotError> {
        // object_store lists by whole path segments; list the enclosing
        // "directory" and filter by the string prefix.
        let full = self.full_key(prefix);
        let root = listing_root(&full).map(ObjectPath::from);
        let own = format!("{}/", self.prefix);
        self.client
            .list(root.as_ref())
            .try_filter_map(|meta| {
                let key = meta.location.to_string();
                let relative = key
                    .starts_with(&full)
                    .then(|| key.strip_prefix(&own).map(str::to_string))
                    .flatten();
                std::future::ready(Ok(relative.map(|relative| (relative, meta))))
            })
            .try_collect()
            .await
            .map_err(|e| self.object_error("list", &full, e))
    }

    /// Deletes these (relative) keys.
    async fn delete_keys(&self, keys: Vec<String>, context: &str) -> Result<usize, SnapshotError> {
        let count = keys.len();
        let locations: Vec<_> = keys
            .iter()
            .map(|key| Ok(ObjectPath::from(self.full_key(key))))
            .collect();
        let locations = futures_util::stream::iter(locations).boxed();
        self.client
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| self.object_error("delete", &self.full_key(context), e))?;
        Ok(count)
    }
}

/// The segment-wise listing prefix that covers the string prefix `prefix`.
fn listing_root(prefix: &str) -> Option<&str> {
    prefix
        .rsplit_once('/')
        .map(|(dir, _)| dir)
        .filter(|dir| !dir.is_empty())
}

/// An object's body as it downloads, ending in an error instead of a
/// clean end when the connection closed before the object's size.
struct WholeDownload<R> {
    body: R,
    key: String,
    expected: u64,
    received: u64,
}

impl<R: std::io::Read> std::io::Read for WholeDownload<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.body.read(buf)?;
        self.received += n as u64;
        if n == 0 && !buf.is_empty() && self.received != self.expected {
            return Err(std::io::Error::other(SnapshotError::Truncated {
                key: self.key.clone(),
                expected: self.expected,
                received: self.received,
            }));
        }
        Ok(n)
    }
}

/// Reads up to one part from `file` (less only at the end of the file).
async fn read_part(file: &mut tokio::fs::File, path: &Path) -> Result<BytesMut, SnapshotError> {
    let mut part = BytesMut::with_capacity(PART_SIZE);
    while part.len() < PART_SIZE {
        let read = file
            .read_buf(&mut part)
            .await
            .map_err(|e| SnapshotError::io(format!("reading {}", path.display()), e))?;
        if read == 0 {
            break;
        }
    }
    Ok(part)
}

#[async_trait]
impl SnapshotStore for S3Store {
    async fn put(&self, key: &str, local_path: &Path) -> Result<(), SnapshotError> {
        validate_key(key)?;
        let key = &self.full_key(key);
        let location = ObjectPath::from(key.as_str());
        let mut file = tokio::fs::File::open(local_path)
            .await
            .map_err(|e| SnapshotError::io(format!("opening {}", local_path.display()), e))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| SnapshotError::io(format!("reading the size of {}", local_path.display()), e))?
            .len();
        if size > PART_SIZE as u64 {
            return self.put_multipart(key, &location, &mut file, local_path).await;
        }
        let whole = read_part(&mut file, local_path).await?;
        self.client
            .put(&location, PutPayload::from(whole.freeze()))
            .await
            .map(|_| ())
            .map_err(|e| self.object_error("upload", key, e))
    }

    async fn get(&self, key: &str, local_path: &Path) -> Result<(), SnapshotError> {
        validate_key(key)?;
        let key = &self.full_key(key);
        let found = self
            .client
            .get(&ObjectPath::from(key.as_str()))
            .await
            .map_err(|e| self.object_error("download", key, e))?;
        let expected = found.meta.size;
        let context = format!("writing {}", local_path.display());
        let target = local_path.to_owned();
        let mut temp = blocking(move || AtomicFile::create(&target).map_err(|e| SnapshotError::io(context, e))).await?;
        let io_error = |e| SnapshotError::io(format!("writing {}", local_path.display()), e);
        let mut out = tokio::fs::File::from_std(temp.file().try_clone().map_err(io_error)?);
        let mut stream = found.into_stream();
        let mut received = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.object_error("download", key, e))?;
            received += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(io_error)?;
        }
        out.flush().await.map_err(io_error)?;
        if received != expected {
            return Err(SnapshotError::Truncated {
                key: key.to_string(),
                expected,
                received,
            });
        }
        let context = format!("writing {}", local_path.display());
        blocking(move || temp.commit().map_err(|e| SnapshotError::io(context, e))).await
    }

    async fn open(&self, key: &str) -> Result<ObjectReader, SnapshotError> {
        validate_key(key)?;
        let key = self.full_key(key);
        let found = self
            .client
            .get(&ObjectPath::from(key.as_str()))
            .await
            .map_err(|e| self.object_error("download", &key, e))?;
        let expected = found.meta.size;
        // Reading happens on a blocking thread; the bridge waits there for
        // the next chunk of the download.
        let body = tokio_util::io::StreamReader::new(found.into_stream().map_err(std::io::Error::other));
        Ok(Box::new(WholeDownload {
            body: tokio_util::io::SyncIoBridge::new(body),
            key,
            expected,
            received: 0,
        }))
    }

    async fn delete(&self, prefix: &str) -> Result<usize, SnapshotError> {
        validate_delete_prefix(prefix)?;
        let keys = self
            .objects_with_prefix(prefix)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        self.delete_keys(keys, prefix).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SnapshotError> {
        validate_prefix(prefix)?;
        let mut keys: Vec<String> = self
            .objects_with_prefix(prefix)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn sweep_orphans(
        &self,
        referenced: &HashSet<(String, String)>,
        min_age: Duration,
    ) -> Result<usize, SnapshotError> {
        // Fails fast when the bucket does not answer (no minute of retries).
        self.check_reachable().await?;
        let doomed: Vec<String> = self
            .objects_with_prefix("")
            .await?
            .into_iter()
            .filter(|(key, meta)| is_orphan(key, age_of(meta.last_modified.into()), referenced, min_age))
            .map(|(key, _)| key)
            .collect();
        for key in &doomed {
            tracing::warn!(key = %self.full_key(key), "removing a snapshot artefact no snapshot record owns");
        }
        self.delete_keys(doomed, "").await
    }

    async fn ensure_available(&self) -> Result<(), SnapshotError> {
        match self.last_probe() {
            Some(Probe { at, result: Ok(()) }) if at.elapsed() < TRUST_OK_FOR => Ok(()),
            _ => self.check_reachable().await,
        }
    }

    async fn health(&self) -> StorageHealth {
        let result = match self.last_probe() {
            Some(probe) if probe.at.elapsed() < HEALTH_REUSED_FOR => probe.result,
            _ => self.check_reachable().await.map_err(|e| e.to_string()),
        };
        StorageHealth {
            kind: self.kind(),
            ok: result.is_ok(),
            detail: match result {
                Ok(()) => self.describe(),
                Err(error) => format!("{error}; snapshots and restores answer 503 until it answers"),
            },
        }
    }

    fn kind(&self) -> &'static str {
        "s3"
    }

    fn describe(&self) -> String {
        format!("S3 bucket {} at {}, under {}/", self.bucket, self.endpoint, self.prefix)
    }
}

/// An S3 client for the configured bucket with these retry and time limits.
fn client(config: &S3Config, retry: RetryConfig, options: ClientOptions) -> Result<AmazonS3, object_store::Error> {
    // `from_env` lets the usual AWS_* credential variables (and instance
    // credentials) apply when HATCH_S3_ACCESS_KEY is not set.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_virtual_hosted_style_request(false)
        .with_retry(retry)
        .with_client_options(options);
    if let Some(endpoint) = &config.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let (Some(access), Some(secret)) = (&config.access_key, &config.secret_key) {
        builder = builder
            .with_access_key_id(access)
            .with_secret_access_key(secret.expose());
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_prefixes_are_listed_from_their_enclosing_directory() {
        assert_eq!(listing_root(""), None);
        assert_eq!(listing_root("vm-"), None);
        assert_eq!(listing_root("vm-a/"), Some("vm-a"));
        assert_eq!(listing_root("vm-a/snap-1/"), Some("vm-a/snap-1"));
        assert_eq!(listing_root("vm-a/snap-"), Some("vm-a"));
    }

    #[test]
    fn a_custom_http_endpoint_builds_a_path_style_client() {
        let config = S3Config {
            endpoint: Some("http://127.0.0.1:9000".into()),
            bucket: "hatch-snapshots".into(),
            region: "us-east-1".into(),
            access_key: None,
            secret_key: None,
            prefix: None,
        };
        let store = S3Store::new(&config, "host-a").expect("client");
        assert_eq!(
            store.describe(),
            "S3 bucket hatch-snapshots at http://127.0.0.1:9000, under host-a/"
        );
        assert!(matches!(
            S3Store::new(&config, "../x"),
            Err(SnapshotError::InvalidKey { .. })
        ));
    }
}
