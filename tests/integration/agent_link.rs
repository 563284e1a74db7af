//! The daemon's agent client against the real `hatch-agent`, run on the
//! host and connected over a Unix socket the way Firecracker forwards a
//! guest's vsock connection (the daemon listens) or QEMU serves a
//! virtio-serial port (the daemon connects). No VM: this is the protocol
//! both sides speak, with real processes. Never sets the clock (that would
//! be the host's).
//!
//! Hostile agents (garbage, oversized frames, replies on channels nobody
//! opened) cost the daemon one dropped conversation and nothing else.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hatch::agent::proto::{ErrorCode, ExecRequest, Frame, Kind, WriteFileRequest, SYNC};
use hatch::agent::{exec, files, AgentError, Agents};
use hatch::vmm::AgentEndpoint;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct AgentProcess(Child);

impl AgentProcess {
    fn connect_to(bin: &Path, socket: &Path) -> AgentProcess {
        let child = Command::new(bin)
            .arg("--connect-unix")
            .arg(socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("hatch-agent");
        AgentProcess(child)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn counting() -> (Arc<AtomicUsize>, hatch::agent::link::OnHello) {
    let hellos = Arc::new(AtomicUsize::new(0));
    let seen = hellos.clone();
    (
        hellos,
        Arc::new(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        }),
    )
}

fn command(args: &[&str]) -> ExecRequest {
    ExecRequest {
        cmd: args.iter().map(|a| a.to_string()).collect(),
        timeout_ms: Some(30_000),
        output_limit: Some(1 << 20),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_listening_link_runs_exec_and_files_and_survives_agent_restarts() {
    let bin = common::images::agent_bin();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vsock.sock_1024");
    let agents = Agents::default();
    let (hellos, on_hello) = counting();
    agents.attach("vm-a", AgentEndpoint::Listen(socket.clone()), on_hello);
    let agent = AgentProcess::connect_to(&bin, &socket);
    let conversation = agents
        .conversation("vm-a", Duration::from_secs(20))
        .await
        .expect("the agent connects");
    assert!(agents.status("vm-a").connected);
    assert_eq!(conversation.hello().version, agents.status("vm-a").version.unwrap());

    let output = exec::run(
        &conversation,
        command(&["sh", "-c", "echo out; echo err >&2; exit 4"]),
        None,
    )
    .await
    .expect("exec");
    assert_eq!(output.exit.exit_code, Some(4));
    assert_eq!(
        (output.stdout.as_slice(), output.stderr.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    let echoed = exec::run(&conversation, command(&["cat"]), Some(vec![0, 1, 2, 255]))
        .await
        .expect("exec with stdin");
    assert_eq!(echoed.stdout, vec![0, 1, 2, 255]);

    // Several channels at once over the one stream.
    let runs = (0..8).map(|n| {
        let conversation = conversation.clone();
        async move {
            exec::run(
                &conversation,
                command(&["sh", "-c", &format!("sleep 0.2; echo {n}")]),
                None,
            )
            .await
        }
    });
    for (n, output) in futures_util::future::join_all(runs).await.into_iter().enumerate() {
        assert_eq!(output.expect("parallel exec").stdout, format!("{n}\n").into_bytes());
    }

    // A 5 MiB file there and back.
    let target = dir.path().join("written.bin");
    let content: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = content
        .chunks(100_000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let request = WriteFileRequest {
        path: target.display().to_string(),
        mode: Some(0o600),
        uid: None,
        gid: None,
    };
    let written = files::write(&conversation, request, futures_util::stream::iter(chunks))
        .await
        .expect("write");
    assert_eq!(written, content.len() as u64);
    assert_eq!(std::fs::read(&target).unwrap(), content);
    let (info, mut body) = files::read(&conversation, target.display().to_string())
        .await
        .expect("read");
    assert_eq!((info.size, info.mode & 0o777), (content.len() as u64, 0o600));
    let mut read_back = Vec::new();
    while let Some(chunk) = body.next_chunk().await.expect("chunk") {
        read_back.extend_from_slice(&chunk);
    }
    assert_eq!(Sha256::digest(&read_back), Sha256::digest(&content));
    let missing = files::read(&conversation, dir.path().join("none").display().to_string()).await;
    assert!(matches!(
        missing,
        Err(AgentError::Guest {
            code: ErrorCode::NotFound,
            ..
        })
    ));

    // The agent restarts: the link meets the new one.
    drop(agent);
    let _agent = AgentProcess::connect_to(&bin, &socket);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while hellos.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no second hello");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let conversation = agents
        .conversation("vm-a", Duration::from_secs(5))
        .await
        .expect("reconnected");
    let output = exec::run(&conversation, command(&["echo", "again"]), None)
        .await
        .expect("exec again");
    assert_eq!(output.stdout, b"again\n");

    agents.detach("vm-a");
    assert!(!agents.status("vm-a").connected);
}

/// Copies bytes until either side ends.
async fn pump(from: &mut (impl tokio::io::AsyncRead + Unpin), to: &mut (impl tokio::io::AsyncWrite + Unpin)) {
    let mut buf = vec![0u8; 65536];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Stands in for QEMU's virtio-serial chardev: serves `socket` for the
/// daemon and relays each daemon connection to the agent's stream.
async fn serial_relay(socket: &Path, agent_side: &Path) {
    let daemon_side = tokio::net::UnixListener::bind(socket).unwrap();
    let agent_listener = tokio::net::UnixListener::bind(agent_side).unwrap();
    tokio::spawn(async move {
        // Like a serial port, the agent's stream outlives daemon connections.
        let (agent, _) = agent_listener.accept().await.unwrap();
        let (mut agent_read, mut agent_write) = agent.into_split();
        loop {
            let Ok((daemon, _)) = daemon_side.accept().await else {
                return;
            };
            let (mut daemon_read, mut daemon_write) = daemon.into_split();
            let to_agent = pump(&mut daemon_read, &mut agent_write);
            let to_daemon = pump(&mut agent_read, &mut daemon_write);
            tokio::select! { _ = to_agent => {}, _ = to_daemon => {} }
        }
    });
}

#[tokio::test]
async fn a_connecting_link_resyncs_a_stream_that_outlived_its_connection() {
    let bin = common::images::agent_bin();
    let dir = tempfile::tempdir().unwrap();
    let (socket, agent_side) = (dir.path().join("agent.sock"), dir.path().join("port"));
    serial_relay(&socket, &agent_side).await;
    let _agent = AgentProcess::connect_to(&bin, &agent_side);
    let (hellos, on_hello) = counting();
    let agents = Agents::default();
    agents.attach("vm-b", AgentEndpoint::Connect(socket.clone()), on_hello.clone());
    let conversation = agents
        .conversation("vm-b", Duration::from_secs(20))
        .await
        .expect("connected");
    // A command still running when the daemon goes away (as in a restart).
    let long = tokio::spawn({
        let conversation = conversation.clone();
        async move { exec::run(&conversation, command(&["sleep", "30"]), None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    agents.detach("vm-b");
    drop(conversation);
    assert!(matches!(long.await.unwrap(), Err(AgentError::Lost)));

    // A new daemon-side link over the same port: the stream resyncs.
    agents.attach("vm-b", AgentEndpoint::Connect(socket), on_hello);
    let conversation = agents
        .conversation("vm-b", Duration::from_secs(20))
        .await
        .expect("resynced");
    let output = exec::run(&conversation, command(&["echo", "resynced"]), None)
        .await
        .expect("exec");
    assert_eq!(output.stdout, b"resynced\n");
    assert!(hellos.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn hostile_agents_cost_one_conversation_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vsock.sock_1024");
    let agents = Agents::default();
    let (hellos, on_hello) = counting();
    agents.attach("vm-h", AgentEndpoint::Listen(socket.clone()), on_hello);
    let connect = || async {
        for _ in 0..200 {
            if let Ok(stream) = tokio::net::UnixStream::connect(&socket).await {
                return stream;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the link never listened");
    };
    // Garbage, then an oversized frame after a valid sync: no hello counted.
    let mut garbage = connect().await;
    garbage.write_all(&[0xAB; 100_000]).await.unwrap();
    let mut oversized = connect().await;
    oversized.write_all(SYNC).await.unwrap();
    oversized
        .write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 1])
        .await
        .unwrap();
    // A hello that is not JSON.
    let mut bad_hello = connect().await;
    bad_hello.write_all(SYNC).await.unwrap();
    bad_hello
        .write_all(&Frame::new(0, Kind::Hello, b"{not json".to_vec()).to_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hellos.load(Ordering::SeqCst), 0);
    assert!(!agents.status("vm-h").connected);
    assert!(agents.conversation("vm-h", Duration::from_millis(100)).await.is_none());

    // A real agent still gets through afterwards.
    let bin = common::images::agent_bin();
    let _agent = AgentProcess::connect_to(&bin, &socket);
    let conversation = agents
        .conversation("vm-h", Duration::from_secs(20))
        .await
        .expect("a good agent");
    let output = exec::run(&conversation, command(&["true"]), None).await.expect("exec");
    assert_eq!(output.exit.exit_code, Some(0));
}
