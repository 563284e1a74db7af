//! A real S3-compatible server for tests: moto's standalone server (PyPI
//! `moto[server]`, installed by scripts/install-deps), started inside a
//! network namespace, listening on that namespace's loopback. It is killed
//! on drop; a namespace it created itself is removed too.
//!
//! The tests look into the bucket with curl (S3 REST calls signed by curl's
//! own SigV4), independently of the code under test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::netns::{wait_for, TestNetns};

/// Port inside the namespace; each namespace is fresh, so no clash.
const PORT: u16 = 39_000;
pub const BUCKET: &str = "hatch-test-snapshots";
pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY: &str = "hatch-test-access";
pub const SECRET_KEY: &str = "hatch-test-secret";

pub struct TestS3 {
    netns: String,
    /// Address the server listens on inside [`TestS3::netns`].
    listen: &'static str,
    child: Option<Child>,
    log_dir: tempfile::TempDir,
    /// Set when this server made its own namespace (dropped after the server).
    own_ns: Option<TestNetns>,
}

impl TestS3 {
    /// A server in a namespace of its own; clients must run inside
    /// [`TestS3::netns`] (e.g. with `TestNetns::block_on`).
    pub fn standalone() -> Self {
        let ns = TestNetns::new();
        let mut server = TestS3::start_in(ns.name());
        server.own_ns = Some(ns);
        server
    }

    /// A server inside the existing namespace `netns` (e.g. the one a test
    /// daemon runs in), with the bucket [`BUCKET`] created.
    pub fn start_in(netns: &str) -> Self {
        TestS3::start(netns, "127.0.0.1")
    }

    /// Like [`TestS3::start_in`], but listening on every address of the
    /// namespace, so other namespaces linked to it (a topology's client)
    /// reach it too (see [`TestS3::env_at`]).
    pub fn start_shared_in(netns: &str) -> Self {
        TestS3::start(netns, "0.0.0.0")
    }

    fn start(netns: &str, listen: &'static str) -> Self {
        let log_dir = tempfile::Builder::new().prefix("hatch-s3-").tempdir().expect("log dir");
        let log = std::fs::File::create(log_dir.path().join("moto.log")).expect("moto log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "python3",
                "-m",
                "moto.server",
                "-H",
                listen,
                "-p",
                &PORT.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start moto's S3 server (python3 -m moto.server; see scripts/install-deps)");
        let mut server = TestS3 {
            netns: netns.to_string(),
            listen,
            child: Some(child),
            log_dir,
            own_ns: None,
        };
        let up = wait_for(Duration::from_secs(60), || {
            if let Some(Ok(Some(status))) = server.child.as_mut().map(|c| c.try_wait()) {
                panic!("moto's S3 server exited with {status}:\n{}", server.log());
            }
            server
                .curl(&["-o", "/dev/null", "-w", "%{http_code}", &server.url("/")])
                .ok()
                .filter(|code| code != "000")
        });
        assert!(up.is_some(), "moto's S3 server did not come up:\n{}", server.log());
        server.curl_ok(&["-X", "PUT", &server.url(&format!("/{BUCKET}"))]);
        server
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The namespace a [`TestS3::standalone`] server made for itself.
    pub fn own_netns(&self) -> &TestNetns {
        self.own_ns.as_ref().expect("a standalone server has its own namespace")
    }

    /// The endpoint as seen from inside the namespace.
    pub fn endpoint(&self) -> String {
        TestS3::loopback_endpoint()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint())
    }

    /// The HATCH_S3_* settings pointing at this server's bucket.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        TestS3::env_for(self.endpoint())
    }

    /// The settings for a client that reaches the server at `addr` (a
    /// server from [`TestS3::start_shared_in`]).
    pub fn env_at(&self, addr: &str) -> Vec<(&'static str, String)> {
        assert_eq!(
            self.listen, "0.0.0.0",
            "only a shared server answers on other addresses"
        );
        TestS3::env_for(format!("http://{addr}:{PORT}"))
    }

    /// The settings for a server on this namespace's loopback, whether or
    /// not one runs there yet.
    pub fn env_for(endpoint: String) -> Vec<(&'static str, String)> {
        vec![
            ("HATCH_S3_ENDPOINT", endpoint),
            ("HATCH_S3_BUCKET", BUCKET.to_string()),
            ("HATCH_S3_REGION", REGION.to_string()),
            ("HATCH_S3_ACCESS_KEY", ACCESS_KEY.to_string()),
            ("HATCH_S3_SECRET_KEY", SECRET_KEY.to_string()),
        ]
    }

    /// The same settings as `hatch::config::S3Config`, for in-process clients.
    pub fn config(&self) -> hatch::config::S3Config {
        let mut args = hatch::config::ServeArgs::defaults();
        args.s3_endpoint = Some(self.endpoint());
        args.s3_bucket = Some(BUCKET.to_string());
        args.s3_region = REGION.to_string();
        args.s3_access_key = Some(ACCESS_KEY.to_string());
        args.s3_secret_key = Some(SECRET_KEY.to_string());
        hatch::config::Config::from_args(&args)
            .expect("valid S3 settings")
            .s3
            .expect("S3 configured")
    }

    /// Object keys in the bucket under `prefix`, as the server lists them
    /// (ListObjectsV2 over plain HTTP; sorted by the server).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let xml = self.curl_ok(&[&self.url(&format!("/{BUCKET}?list-type=2&max-keys=1000&prefix={prefix}"))]);
        xml.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_string()))
            .collect()
    }

    /// The endpoint a [`TestS3::start_in`] server in any namespace has.
    pub fn loopback_endpoint() -> String {
        format!("http://127.0.0.1:{PORT}")
    }

    /// Stores `bytes` as the object `key`, past the code under test.
    pub fn put_object(&self, key: &str, bytes: &[u8]) {
        let file = self.log_dir.path().join("upload");
        std::fs::write(&file, bytes).expect("write upload");
        self.curl_ok(&[
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", file.display()),
            &self.url(&format!("/{BUCKET}/{key}")),
        ]);
    }

    /// The bytes of an object, fetched by the server directly.
    pub fn object(&self, key: &str) -> Vec<u8> {
        let output = self
            .curl_command(&["-f", &self.url(&format!("/{BUCKET}/{key}"))])
            .output()
            .expect("curl");
        assert!(
            output.status.success(),
            "GET {key} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// The object's ETag; a multipart upload's ends in `-<number of parts>`.
    pub fn etag(&self, key: &str) -> String {
        let headers = self.curl_ok(&["-I", &self.url(&format!("/{BUCKET}/{key}"))]);
        headers
            .lines()
            .find_map(|line| {
                line.split_once(':')
                    .filter(|(name, _)| name.eq_ignore_ascii_case("etag"))
            })
            .map(|(_, value)| value.trim().trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("no ETag for {key}: {headers}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.log_dir.path().join("moto.log")
    }

    fn curl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        let sigv4 = format!("aws:amz:{REGION}:s3");
        let user = format!("{ACCESS_KEY}:{SECRET_KEY}");
        command
            .args([
                "netns",
                "exec",
                &self.netns,
                "curl",
                "-sS",
                "--max-time",
                "30",
                "--aws-sigv4",
                &sigv4,
                "--user",
                &user,
            ])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn curl(&self, args: &[&str]) -> Result<String, String> {
        let output = self.curl_command(args).output().map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    fn curl_ok(&self, args: &[&str]) -> String {
        let mut full = vec!["-f"];
        full.extend_from_slice(args);
        self.curl(&full)
            .unwrap_or_else(|e| panic!("curl {args:?} failed: {e}\n{}", self.log()))
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        // `ip netns exec` execs python, so the child is the server itself.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // `own_ns` (if any) is dropped after this, removing the namespace.
    }
}
