//! A stand-in for the internet behind a [`Topology`]'s Hatch host, so the
//! networking guide's checks (`ping -c 3 8.8.8.8`, `nslookup google.com`,
//! `curl -I https://google.com`) have somewhere to go without leaving the
//! test's namespaces: a namespace holding the public resolvers' addresses
//! with a real DNS server (dnsmasq) on them that knows `google.com`, and a
//! real HTTPS server for google.com whose certificate a test CA signed
//! (guests trust it through cloud-init's `ca_certs`).
//!
//! The Hatch host's default route leads there, and its `/etc/resolv.conf`
//! names 8.8.8.8: `ip netns exec` gives a namespace's processes
//! `/etc/netns/<ns>/resolv.conf` in its place, so Hatch's dnsmasq forwards
//! guests' queries there, as it forwards to the host's resolvers in real
//! life.

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::Child;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Response;
use hyper_util::rt::TokioIo;

use super::e2e::Topology;
use super::netns::{NsRuntime, TestNetns};
use super::tls::TestPki;

/// google.com's address out there.
pub const GOOGLE_IP: &str = "142.250.74.46";
/// The public DNS servers the guide names, all answering.
pub const PUBLIC_DNS: [&str; 4] = ["8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1"];
/// Subnet of the link between the Hatch host and the internet (10.250.N.0/24).
const LINK_SUBNET: u8 = 9;

pub struct FakeInternet {
    https: NsRuntime,
    dns: Child,
    /// The CA that signed google.com's certificate (PEM).
    pub ca_pem: String,
    _pki: TestPki,
    resolv_dir: PathBuf,
    ns: TestNetns,
}

impl FakeInternet {
    /// Connects a new internet to `topo`'s Hatch host. Call it before the
    /// daemon starts, so the daemon's `ip netns exec` sees the resolv.conf.
    pub fn attach(topo: &Topology) -> FakeInternet {
        let ns = TestNetns::new();
        let link = topo.host().add_client(&ns, LINK_SUBNET);
        topo.host()
            .ip(&["route", "add", "default", "via", &link.client_ip.to_string()]);
        for addr in PUBLIC_DNS.iter().chain([&GOOGLE_IP]) {
            ns.ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
        }
        let resolv_dir = PathBuf::from("/etc/netns").join(topo.host_ns());
        std::fs::create_dir_all(&resolv_dir).expect("create /etc/netns/<ns>");
        std::fs::write(resolv_dir.join("resolv.conf"), "nameserver 8.8.8.8\n").expect("write resolv.conf");

        let listen = format!("--listen-address={}", PUBLIC_DNS.join(","));
        // An A record only; `--local` makes the other types an empty answer
        // (not REFUSED for want of an upstream), so nslookup's AAAA query succeeds.
        let google = format!("--host-record=google.com,{GOOGLE_IP}");
        let dns = ns.spawn(
            "dnsmasq",
            &[
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--except-interface=eth0",
                &listen,
                &google,
                "--local=/google.com/",
                "--user=root",
                "--pid-file=",
            ],
        );
        let pki = TestPki::for_names(&["DNS:google.com", "DNS:www.google.com"]);
        let ca_pem = std::fs::read_to_string(&pki.ca).expect("CA certificate");
        let https = ns.runtime();
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config());
        https.run(async move {
            let listener = tokio::net::TcpListener::bind((GOOGLE_IP, 443))
                .await
                .expect("bind :443");
            tokio::spawn(serve_https(listener, acceptor));
        });
        FakeInternet {
            https,
            dns,
            ca_pem,
            _pki: pki,
            resolv_dir,
            ns,
        }
    }

    /// The internet's namespace (to look at what arrived there).
    pub fn ns(&self) -> &TestNetns {
        &self.ns
    }
}

/// Answers every request with `200 OK` (`server: fake-google`).
async fn serve_https(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
    while let Ok((stream, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(|_request| async {
                let response = Response::builder()
                    .header("server", "fake-google")
                    .body(Empty::<Bytes>::new())
                    .expect("response");
                Ok::<_, Infallible>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

impl Drop for FakeInternet {
    fn drop(&mut self) {
        let _ = self.dns.kill();
        let _ = self.dns.wait();
        let _ = std::fs::remove_dir_all(&self.resolv_dir);
        // Left behind only when empty (other tests may use it meanwhile).
        let _ = std::fs::remove_dir("/etc/netns");
    }
}
