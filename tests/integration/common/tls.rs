//! A throwaway PKI made with the real `openssl`: a test CA, a server
//! certificate it signed, and a second CA nobody should trust.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::netns::run_ok;

/// Names the server certificate is valid for: the API's name, the wildcard
/// of the proxy tests' base domain and of the daemon tests' base domain,
/// and loopback.
pub const SERVER_NAMES: &[&str] = &[
    "DNS:hatch.test",
    "DNS:localhost",
    "DNS:*.example.test",
    "DNS:*.apps.hatch.test",
    "IP:127.0.0.1",
];

pub struct TestPki {
    dir: tempfile::TempDir,
    /// The CA that signed `cert`.
    pub ca: PathBuf,
    /// The server certificate (PEM) and its private key (PKCS#8 PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Another CA: a client trusting only this one must refuse the server.
    pub other_ca: PathBuf,
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A self-signed CA certificate and key (EC P-256, valid two days).
fn make_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            path(&key),
            "-out",
            path(&cert),
            "-days",
            "2",
            "-subj",
            &format!("/CN=Hatch test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    (cert, key)
}

impl TestPki {
    pub fn generate() -> TestPki {
        Self::for_names(SERVER_NAMES)
    }

    /// Like [`generate`](Self::generate), the server certificate valid for
    /// `names` (`DNS:...`, `IP:...`).
    pub fn for_names(names: &[&str]) -> TestPki {
        let dir = tempfile::tempdir().expect("pki dir");
        let d = dir.path();
        let (ca, ca_key) = make_ca(d, "ca");
        let (other_ca, _) = make_ca(d, "other-ca");
        let (cert, key, csr) = (d.join("server.pem"), d.join("server.key"), d.join("server.csr"));
        run_ok(
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                path(&key),
                "-out",
                path(&csr),
                "-subj",
                "/CN=hatch.test",
            ],
        );
        let extensions = d.join("server.ext");
        std::fs::write(
            &extensions,
            format!(
                "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
                names.join(",")
            ),
        )
        .expect("extensions file");
        run_ok(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                path(&csr),
                "-CA",
                path(&ca),
                "-CAkey",
                path(&ca_key),
                "-set_serial",
                "4242",
                "-days",
                "2",
                "-extfile",
                path(&extensions),
                "-out",
                path(&cert),
            ],
        );
        TestPki {
            dir,
            ca,
            cert,
            key,
            other_ca,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to a file in the PKI directory; its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let file = self.dir.path().join(name);
        std::fs::write(&file, contents).expect("write file");
        file
    }

    /// The server side, as Hatch loads it from HATCH_PROXY_TLS_CERT/KEY.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let files = hatch::tls::TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
        };
        hatch::tls::server_config(&files, hatch::tls::PROXY_TLS).expect("server TLS config")
    }

    /// A client that trusts this PKI's CA only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        hatch::tls::client_config(Some(&self.ca)).expect("client TLS config")
    }
}
