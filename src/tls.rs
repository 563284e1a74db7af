//! TLS with rustls (ring): the API's and the reverse proxy's certificates
//! (HATCH_TLS_CERT/KEY, HATCH_PROXY_TLS_CERT/KEY), an accepting listener
//! for the API server, and the CLI's client configuration (HATCH_CA_CERT).
//!
//! Every error names the variable the file came from, so start-up (or a
//! CLI command) refuses with a message the operator can act on.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConfig;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::ConfigError;

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// The variables a [`TlsFiles`] came from, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct TlsVariables {
    pub cert: &'static str,
    pub key: &'static str,
}

pub const API_TLS: TlsVariables = TlsVariables {
    cert: "HATCH_TLS_CERT",
    key: "HATCH_TLS_KEY",
};

pub const PROXY_TLS: TlsVariables = TlsVariables {
    cert: "HATCH_PROXY_TLS_CERT",
    key: "HATCH_PROXY_TLS_KEY",
};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file; at least one.
fn read_certificates(variable: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem =
        std::fs::read(path).map_err(|e| ConfigError::new(variable, format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(variable, format!("{}: not a valid PEM file: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            variable,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The server side of TLS for one listener, from its PEM files: the
/// certificate chain (server certificate first) and its private key
/// (PKCS#8, PKCS#1 or SEC1). Speaks HTTP/1.1 (ALPN).
pub fn server_config(files: &TlsFiles, vars: TlsVariables) -> Result<Arc<ServerConfig>, ConfigError> {
    let certs = read_certificates(vars.cert, &files.cert)?;
    let key_pem = std::fs::read(&files.key)
        .map_err(|e| ConfigError::new(vars.key, format!("cannot read {}: {e}", files.key.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        ConfigError::new(
            vars.key,
            format!(
                "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                files.key.display()
            ),
        )
    })?;
    let provider = provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| ConfigError::new(vars.key, format!("{}: unusable private key: {e}", files.key.display())))?;
    match CertifiedKey::new(certs.clone(), signing_key).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(ConfigError::new(
                vars.key,
                format!(
                    "{} is not the private key of the certificate in {} ({})",
                    files.key.display(),
                    vars.cert,
                    files.cert.display()
                ),
            ))
        }
        Err(rustls::Error::InvalidCertificate(e)) => {
            return Err(ConfigError::new(
                vars.cert,
                format!("{}: not a valid X.509 certificate ({e:?})", files.cert.display()),
            ))
        }
        Err(e) => {
            return Err(ConfigError::new(
                vars.cert,
                format!("{}: not a usable certificate: {e}", files.cert.display()),
            ))
        }
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(vars.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::new(vars.cert, format!("{}: {e}", files.cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP listener whose connections come out TLS-terminated, for
/// `axum::serve`. Handshakes run concurrently in their own tasks (a slow
/// or silent client holds up nobody); failed ones are logged and dropped.
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor_task: JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let acceptor_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually out of file descriptors: pause instead of spinning.
                        tracing::warn!(%error, "accepting an API connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local_addr,
            ready,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The acceptor task only ends when aborted, i.e. never while
            // this listener exists.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// The client side: trusts the CA certificates in `ca_file` (HATCH_CA_CERT)
/// only, or the system's roots when there is none.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = read_certificates("HATCH_CA_CERT", path).map_err(|e| e.to_string())?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("HATCH_CA_CERT: {}: not a usable CA certificate: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(
                    "no system CA certificates found; set HATCH_CA_CERT to the CA that signed the daemon's certificate"
                        .into(),
                );
            }
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS failure explained for a person: untrusted certificate, wrong
/// name, or a server that does not speak TLS at all.
pub fn explain_client_error(at: &str, error: &std::io::Error) -> String {
    use rustls::{CertificateError, Error};
    let tls = error.get_ref().and_then(|inner| inner.downcast_ref::<Error>());
    match tls {
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer))
        | Some(Error::InvalidCertificate(CertificateError::BadSignature)) => format!(
            "the daemon at {at} presented a certificate signed by a CA this client does not trust; \
             set HATCH_CA_CERT (or --ca-cert) to the CA certificate that signed it ({error})"
        ),
        Some(Error::InvalidCertificate(CertificateError::NotValidForName))
        | Some(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => format!(
            "the daemon's certificate is not valid for the host in HATCH_URL ({at}); use a name or \
             address the certificate was issued for ({error})"
        ),
        Some(Error::InvalidCertificate(_)) => {
            format!("the daemon at {at} presented a certificate this client rejects: {error}")
        }
        Some(Error::InvalidMessage(_)) | Some(Error::InappropriateMessage { .. }) => format!(
            "the daemon at {at} does not speak TLS; if it serves plain HTTP, use an http:// HATCH_URL ({error})"
        ),
        _ => format!("TLS connection to {at} failed: {error}"),
    }
}
