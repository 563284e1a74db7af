//! `hatch serve` with HTTPS (HATCH_TLS_CERT/KEY) and its proxy with TLS
//! (HATCH_PROXY_TLS_CERT/KEY, HATCH_PROXY_HSTS), reached with the real curl
//! and the `hatch` CLI (HATCH_CA_CERT) from inside the daemon's own network
//! namespace; the warning for a plain-HTTP API on a non-loopback address;
//! and start-up refusing bad TLS settings, naming the variable.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon::hatch_command_in;
use common::netns::{wait_for, TestNetns};
use common::tls::TestPki;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// A `hatch serve` in its own namespace; everything it prints on stderr is kept.
struct Daemon {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
    data_dir: tempfile::TempDir,
    netns: TestNetns,
}

impl Daemon {
    fn start(vars: &[(&str, &str)]) -> Daemon {
        let netns = TestNetns::new();
        let data_dir = tempfile::tempdir().unwrap();
        let data = data_dir.path().join("data");
        let mut all: Vec<(&str, &str)> = vec![("HATCH_DATA_DIR", data.to_str().unwrap())];
        all.extend_from_slice(vars);
        let mut child = hatch_command_in(Some(&netns), &["serve"], &all)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = child.stderr.take().unwrap();
        let kept = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(lines).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let Ok(listening) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("the daemon did not report its address: {:?}", stderr.lock().unwrap());
        };
        let port = listening.rsplit(':').next().unwrap().parse().unwrap();
        Daemon {
            child,
            port,
            stderr,
            data_dir,
            netns,
        }
    }

    fn admin_key(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("data/admin.key"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// `curl` in the daemon's namespace; `hatch.test` resolves to its loopback.
    fn curl(&self, args: &[&str]) -> Output {
        let resolve = format!("hatch.test:{}:127.0.0.1", self.port);
        let mut all = vec!["-sS", "--max-time", "10", "--resolve", &resolve];
        all.extend_from_slice(args);
        self.netns.exec("curl", &all)
    }

    /// The `hatch` CLI in the daemon's namespace, with the admin key.
    fn hatch(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let key = self.admin_key();
        let mut all = vec![("HATCH_API_KEY", key.as_str())];
        all.extend_from_slice(vars);
        hatch_command_in(Some(&self.netns), args, &all).output().unwrap()
    }

    /// SIGTERM, then whether it exited successfully (waits up to 15 s).
    fn terminate(&mut self) -> bool {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let status = wait_for(Duration::from_secs(15), || self.child.try_wait().unwrap());
        status.expect("the daemon did not stop on SIGTERM").success()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A killed daemon leaves dnsmasq's hosts files outside its data directory.
        let dhcp = self.data_dir.path().join("data").join("dhcp");
        let _ = std::fs::remove_dir_all(hatch::net::dnsmasq::Paths::new(&dhcp).reread);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn https_api_and_proxy_with_a_test_ca() {
    let pki = TestPki::generate();
    let (cert, key, ca) = (
        pki.cert.to_str().unwrap(),
        pki.key.to_str().unwrap(),
        pki.ca.to_str().unwrap(),
    );
    let mut daemon = Daemon::start(&[
        // Every address of its namespace, with TLS: no warning.
        ("HATCH_HTTP_ADDR", "0.0.0.0:0"),
        ("HATCH_TLS_CERT", cert),
        ("HATCH_TLS_KEY", key),
        ("HATCH_PROXY_ADDR", "127.0.0.1:9443"),
        ("HATCH_PROXY_BASE_DOMAIN", "apps.hatch.test"),
        ("HATCH_PROXY_TLS_CERT", cert),
        ("HATCH_PROXY_TLS_KEY", key),
        ("HATCH_PROXY_HSTS", "true"),
    ]);
    let port = daemon.port;
    let base = format!("https://hatch.test:{port}");

    // curl trusting the test CA: health and an authenticated call.
    let output = daemon.curl(&["--cacert", ca, "-w", "\n%{http_code}", &format!("{base}/healthz")]);
    assert!(output.status.success(), "curl over HTTPS: {}", text(&output.stderr));
    assert!(text(&output.stdout).ends_with("\n200"), "{}", text(&output.stdout));
    let auth = format!("Authorization: Bearer {}", daemon.admin_key());
    let output = daemon.curl(&["--cacert", ca, "-f", "-H", &auth, &format!("{base}/vms")]);
    assert!(output.status.success(), "GET /vms over HTTPS: {}", text(&output.stderr));
    let vms: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(vms.is_array() || vms["vms"].is_array(), "{vms}");

    // curl with only the system's CAs refuses the certificate (60: peer
    // certificate cannot be authenticated).
    let output = daemon.curl(&[&format!("{base}/healthz")]);
    assert_eq!(output.status.code(), Some(60), "{}", text(&output.stderr));

    // Plain HTTP to the TLS port gets no HTTP answer.
    let output = daemon.curl(&["-w", "%{http_code}", &format!("http://127.0.0.1:{port}/healthz")]);
    assert!(
        !output.status.success(),
        "plain HTTP was answered: {}",
        text(&output.stdout)
    );

    // The CLI over https:// with HATCH_CA_CERT (an IP address SAN here).
    let url = format!("https://127.0.0.1:{port}");
    let output = daemon.hatch(&["vm", "list", "--json"], &[("HATCH_URL", &url), ("HATCH_CA_CERT", ca)]);
    assert!(output.status.success(), "hatch vm list: {}", text(&output.stderr));
    let listed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(listed.is_array(), "{listed}");
    // The flag does the same, and `localhost` is a name on the certificate.
    let url_by_name = format!("https://localhost:{port}");
    let output = daemon.hatch(&["key", "list", "--url", &url_by_name, "--ca-cert", ca, "--json"], &[]);
    assert!(output.status.success(), "hatch key list: {}", text(&output.stderr));
    let keys: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(!keys.as_array().expect("keys").is_empty(), "{keys}");

    // A client that trusts another CA, or only the system's, fails clearly.
    let other = pki.other_ca.to_str().unwrap();
    for vars in [
        vec![("HATCH_URL", url.as_str()), ("HATCH_CA_CERT", other)],
        vec![("HATCH_URL", url.as_str())],
    ] {
        let output = daemon.hatch(&["vm", "list"], &vars);
        assert!(!output.status.success(), "{vars:?}: an untrusted daemon was accepted");
        let stderr = text(&output.stderr);
        assert!(stderr.contains("HATCH_CA_CERT"), "{vars:?}: {stderr}");
    }
    // An address the certificate does not list is refused, saying so.
    let output = daemon.hatch(
        &["vm", "list"],
        &[
            ("HATCH_URL", &format!("https://127.0.0.2:{port}")),
            ("HATCH_CA_CERT", ca),
        ],
    );
    assert!(!output.status.success(), "a certificate for another name was accepted");
    assert!(
        text(&output.stderr).contains("not valid for the host"),
        "{}",
        text(&output.stderr)
    );
    // A CA file that does not exist is named.
    let output = daemon.hatch(
        &["vm", "list"],
        &[("HATCH_URL", &url), ("HATCH_CA_CERT", "/nonexistent/ca.pem")],
    );
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("HATCH_CA_CERT"),
        "{}",
        text(&output.stderr)
    );
    // http:// against the TLS port fails instead of hanging.
    let output = daemon.hatch(&["vm", "list"], &[("HATCH_URL", &format!("http://127.0.0.1:{port}"))]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("https://"), "{}", text(&output.stderr));

    // The proxy terminates TLS with the wildcard certificate and sends HSTS.
    let output = daemon.netns.exec(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            ca,
            "--resolve",
            "nothing.apps.hatch.test:9443:127.0.0.1",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "https://nothing.apps.hatch.test:9443/",
        ],
    );
    assert!(output.status.success(), "curl to the proxy: {}", text(&output.stderr));
    let headers = text(&output.stdout).to_ascii_lowercase();
    assert!(headers.starts_with("http/1.1 404"), "{headers}");
    assert!(
        headers.contains("strict-transport-security: max-age=31536000"),
        "{headers}"
    );

    let stderr = daemon.stderr();
    assert!(!stderr.contains("without TLS"), "no warning with TLS: {stderr}");
    assert!(daemon.terminate(), "graceful stop: {}", daemon.stderr());
}

#[test]
fn a_plain_http_api_on_a_non_loopback_address_warns() {
    let daemon = Daemon::start(&[("HATCH_HTTP_ADDR", "0.0.0.0:0")]);
    // The warning comes before "listening on", so it is already there.
    let stderr = daemon.stderr();
    let warning = stderr
        .lines()
        .find(|line| line.contains("hatch: warning") && line.contains("without TLS"))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(warning.contains("HATCH_TLS_CERT"), "{warning}");
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("WARN") && line.contains("without TLS")),
        "the log has it too: {stderr}"
    );
    drop(daemon);

    let daemon = Daemon::start(&[("HATCH_HTTP_ADDR", "127.0.0.1:0")]);
    assert!(!daemon.stderr().contains("without TLS"), "{}", daemon.stderr());
}

#[test]
fn bad_tls_settings_refuse_startup_naming_the_variable() {
    let pki = TestPki::generate();
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    let garbage = pki.write("garbage.pem", "this is not PEM at all\n");
    let garbage = garbage.to_str().unwrap();
    let bad_base64 = pki.write(
        "bad-base64.pem",
        "-----BEGIN CERTIFICATE-----\n@@@not base64@@@\n-----END CERTIFICATE-----\n",
    );
    let bad_base64 = bad_base64.to_str().unwrap();
    let not_a_cert = pki.write(
        "not-a-cert.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    );
    let not_a_cert = not_a_cert.to_str().unwrap();
    // Another key: does not belong to the certificate.
    let other_key = pki.dir().join("other-ca.key");
    let other_key = other_key.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().unwrap();
    let netns = TestNetns::new();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("HATCH_TLS_KEY", vec![("HATCH_TLS_CERT", cert)]),
        ("HATCH_TLS_CERT", vec![("HATCH_TLS_KEY", key)]),
        (
            "HATCH_TLS_CERT",
            vec![("HATCH_TLS_CERT", "/nonexistent/cert.pem"), ("HATCH_TLS_KEY", key)],
        ),
        (
            "HATCH_TLS_KEY",
            vec![("HATCH_TLS_CERT", cert), ("HATCH_TLS_KEY", "/nonexistent/key.pem")],
        ),
        (
            "HATCH_TLS_CERT",
            vec![("HATCH_TLS_CERT", garbage), ("HATCH_TLS_KEY", key)],
        ),
        (
            "HATCH_TLS_CERT",
            vec![("HATCH_TLS_CERT", bad_base64), ("HATCH_TLS_KEY", key)],
        ),
        (
            "HATCH_TLS_CERT",
            vec![("HATCH_TLS_CERT", not_a_cert), ("HATCH_TLS_KEY", key)],
        ),
        (
            "HATCH_TLS_KEY",
            vec![("HATCH_TLS_CERT", cert), ("HATCH_TLS_KEY", garbage)],
        ),
        // The certificate in the key's place.
        ("HATCH_TLS_KEY", vec![("HATCH_TLS_CERT", cert), ("HATCH_TLS_KEY", cert)]),
        (
            "HATCH_TLS_KEY",
            vec![("HATCH_TLS_CERT", cert), ("HATCH_TLS_KEY", other_key)],
        ),
        (
            "HATCH_TLS_CERT",
            vec![
                ("HATCH_TLS_CERT", cert),
                ("HATCH_TLS_KEY", key),
                ("HATCH_HTTP_ADDR", "unix:/tmp/hatch-tls-test.sock"),
            ],
        ),
        ("HATCH_PROXY_TLS_KEY", vec![("HATCH_PROXY_TLS_CERT", cert)]),
        ("HATCH_PROXY_TLS_CERT", vec![("HATCH_PROXY_TLS_KEY", key)]),
        (
            "HATCH_PROXY_TLS_CERT",
            vec![("HATCH_PROXY_TLS_CERT", garbage), ("HATCH_PROXY_TLS_KEY", key)],
        ),
        (
            "HATCH_PROXY_TLS_KEY",
            vec![
                ("HATCH_PROXY_TLS_CERT", cert),
                ("HATCH_PROXY_TLS_KEY", "/nonexistent/key.pem"),
            ],
        ),
        ("HATCH_PROXY_HSTS", vec![("HATCH_PROXY_HSTS", "true")]),
        (
            "HATCH_PROXY_HSTS",
            vec![
                ("HATCH_PROXY_TLS_CERT", cert),
                ("HATCH_PROXY_TLS_KEY", key),
                ("HATCH_PROXY_HSTS", "sometimes"),
            ],
        ),
    ];
    for (variable, vars) in cases {
        let mut all = vec![("HATCH_DATA_DIR", data), ("HATCH_HTTP_ADDR", "127.0.0.1:0")];
        all.extend(vars.iter().copied());
        let output = hatch_command_in(Some(&netns), &["serve"], &all)
            .output()
            .expect("run hatch");
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{vars:?} was accepted: {stderr}");
        assert!(
            stderr.contains(&format!("{variable}:")),
            "{vars:?} should name {variable}: {stderr}"
        );
        assert!(
            !data_dir.exists(),
            "{vars:?}: nothing created before the settings are valid"
        );
    }
}
