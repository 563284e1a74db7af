//! Artefacts in an S3-compatible bucket, through the `object_store` crate.
//!
//! Uploads stream the file in parts (multipart upload, a few parts in
//! flight), so a memory artefact of hundreds of MiB never sits in RAM, and
//! an object becomes visible only when its upload completes. Downloads
//! stream into an [`AtomicFile`]. Requests use path-style addressing
//! (`<endpoint>/<bucket>/<key>`), which every S3-compatible server speaks;
//! plain HTTP is allowed when the configured endpoint is an `http://` URL.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt as _, PutPayload, RetryConfig, WriteMultipart};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::store::{validate_delete_prefix, validate_key, validate_prefix};
use super::{blocking, SnapshotError, SnapshotStore};
use crate::config::S3Config;
use crate::sys::atomic_file::AtomicFile;

/// Size of one uploaded part. S3 wants at least 5 MiB for every part but
/// the last; files up to this size go up in a single request.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once: bounds memory use to about this many parts.
const PARTS_IN_FLIGHT: usize = 3;

/// A bucket on S3 or an S3-compatible server.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Arc<AmazonS3>,
    bucket: String,
    /// Where requests go, for messages (`AWS` when no endpoint is set).
    endpoint: String,
}

impl S3Store {
    /// Builds a client for the configured bucket; no request is made yet
    /// (see [`S3Store::check_reachable`]).
    pub fn new(config: &S3Config) -> Result<S3Store, SnapshotError> {
        // `from_env` lets the usual AWS_* credential variables (and instance
        // credentials) apply when HATCH_S3_ACCESS_KEY is not set.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            })
            // A whole part must fit in one request's time budget.
            .with_client_options(ClientOptions::new().with_timeout(Duration::from_secs(300)));
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
        let endpoint = config.endpoint.clone().unwrap_or_else(|| "AWS".to_string());
        let client = builder.build().map_err(|source| SnapshotError::S3Config {
            bucket: config.bucket.clone(),
            endpoint: endpoint.clone(),
            source,
        })?;
        Ok(S3Store {
            client: Arc::new(client),
            bucket: config.bucket.clone(),
            endpoint,
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// One listing request: proves the endpoint answers, the credentials
    /// are accepted and the bucket exists.
    pub async fn check_reachable(&self) -> Result<(), SnapshotError> {
        self.client
            .list_with_delimiter(None)
            .await
            .map(|_| ())
            .map_err(|source| SnapshotError::S3Unreachable {
                bucket: self.bucket.clone(),
                endpoint: self.endpoint.clone(),
                source,
            })
    }

    fn object_error(&self, op: &'static str, key: &str, source: object_store::Error) -> SnapshotError {
        match source {
            object_store::Error::NotFound { .. } => SnapshotError::NotFound { key: key.to_string() },
            source => SnapshotError::ObjectStore {
                op,
                bucket: self.bucket.clone(),
                key: key.to_string(),
                source,
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

    /// Keys under `prefix` (a plain string prefix), unsorted.
    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, SnapshotError> {
        // object_store lists by whole path segments; list the enclosing
        // "directory" and filter by the string prefix.
        let root = listing_root(prefix).map(ObjectPath::from);
        self.client
            .list(root.as_ref())
            .map_ok(|meta| meta.location.to_string())
            .try_filter(|key| std::future::ready(key.starts_with(prefix)))
            .try_collect()
            .await
            .map_err(|e| self.object_error("list", prefix, e))
    }
}

/// The segment-wise listing prefix that covers the string prefix `prefix`.
fn listing_root(prefix: &str) -> Option<&str> {
    prefix
        .rsplit_once('/')
        .map(|(dir, _)| dir)
        .filter(|dir| !dir.is_empty())
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
        let location = ObjectPath::from(key);
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
        let found = self
            .client
            .get(&ObjectPath::from(key))
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

    async fn delete(&self, prefix: &str) -> Result<usize, SnapshotError> {
        validate_delete_prefix(prefix)?;
        let keys = self.keys_with_prefix(prefix).await?;
        let count = keys.len();
        let locations = futures_util::stream::iter(keys.into_iter().map(|key| Ok(ObjectPath::from(key)))).boxed();
        self.client
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| self.object_error("delete", prefix, e))?;
        Ok(count)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SnapshotError> {
        validate_prefix(prefix)?;
        let mut keys = self.keys_with_prefix(prefix).await?;
        keys.sort();
        Ok(keys)
    }

    fn describe(&self) -> String {
        format!("S3 bucket {} at {}", self.bucket, self.endpoint)
    }
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
        };
        let store = S3Store::new(&config).expect("client");
        assert_eq!(store.describe(), "S3 bucket hatch-snapshots at http://127.0.0.1:9000");
    }
}
