//! nginx as a comparison proxy: a config in a temporary directory proxying
//! to the same upstream with keep-alive, like Hatch's proxy does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hatch::proxy::wait_port_open;

/// A running nginx; killed and its directory removed when dropped.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// The master's process id (its workers are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx from HATCH_BENCH_NGINX or PATH, if installed.
pub fn find() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HATCH_BENCH_NGINX") {
        return Some(PathBuf::from(path));
    }
    hatch::sys::cmd::find_on_path("nginx").or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/nginx");
        sbin.is_file().then_some(sbin)
    })
}

fn config(dir: &std::path::Path, listen: SocketAddr, upstream: SocketAddr, workers: usize) -> String {
    let dir = dir.display();
    format!(
        "worker_processes {workers};
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream guest {{ server {upstream}; keepalive 64; }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://guest;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_buffering off;
        }}
    }}
}}
"
    )
}

/// Starts nginx on a free loopback port in front of `upstream`.
pub async fn start(binary: &std::path::Path, upstream: SocketAddr, workers: usize) -> Result<Nginx, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    // Ask the kernel for a free port, then let nginx bind it.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = probe.local_addr().map_err(|e| e.to_string())?;
    drop(probe);
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, config(dir.path(), addr, upstream, workers)).map_err(|e| e.to_string())?;
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    let nginx = Nginx { child, addr, _dir: dir };
    wait_port_open(addr, tokio::time::Instant::now() + Duration::from_secs(10))
        .await
        .map_err(|e| format!("nginx did not start listening: {e}"))?;
    Ok(nginx)
}
