//! A small synchronous host for the agent: listens on a Unix socket in a
//! temporary directory, starts the built agent with `--connect-unix`, and
//! speaks the protocol from `hatch-agent-proto`.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use hatch_agent_proto::{
    host_preamble, skip_to_sync, ExecExit, ExecRequest, FileInfo, Frame, Hello, Kind, Reply, Request, WriteFileRequest,
    CONTROL_CHANNEL, MAX_PAYLOAD,
};

/// Long enough for anything a test does; a hung agent fails the test
/// instead of hanging it.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Host {
    agent: Child,
    listener: UnixListener,
    pub dir: tempfile::TempDir,
}

impl Host {
    /// Starts an agent and accepts its first connection.
    pub fn start() -> (Host, Conn) {
        Host::start_with(|agent, socket| {
            let mut command = Command::new(agent);
            command.arg("--connect-unix").arg(socket);
            command
        })
    }

    /// Starts the command `wrap` makes of the agent's path and the socket
    /// (the agent inside namespaces, say) and accepts the agent's first
    /// connection; panics if the command ends before the agent connects.
    pub fn start_with(wrap: impl FnOnce(&Path, &Path) -> Command) -> (Host, Conn) {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let agent = wrap(Path::new(env!("CARGO_BIN_EXE_hatch-agent")), &socket)
            .spawn()
            .expect("start the agent");
        let mut host = Host { agent, listener, dir };
        let conn = host.first_connection();
        (host, conn)
    }

    fn first_connection(&mut self) -> Conn {
        self.listener.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + READ_TIMEOUT;
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept: {e}"),
            }
            if let Some(status) = self.agent.try_wait().unwrap() {
                panic!("the agent's command ended ({status}) before the agent connected; its stderr is above");
            }
            assert!(std::time::Instant::now() < deadline, "the agent never connected");
            std::thread::sleep(Duration::from_millis(10));
        };
        self.listener.set_nonblocking(false).unwrap();
        stream.set_nonblocking(false).unwrap();
        Conn::sync(stream)
    }

    /// The process id of what was started (the agent, or what wraps it).
    pub fn pid(&self) -> u32 {
        self.agent.id()
    }

    /// The agent's next connection, synced.
    pub fn accept(&self) -> Conn {
        let (stream, _) = self.listener.accept().expect("accept");
        Conn::sync(stream)
    }

    /// The agent's next connection, not synced.
    pub fn accept_raw(&self) -> UnixStream {
        self.listener.accept().expect("accept").0
    }

    /// A path in the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

pub struct Conn {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
    pending: HashMap<u32, VecDeque<Frame>>,
    next_channel: u32,
    pub hello: Hello,
}

/// What an exec sent back.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: ExecExit,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The process id the command printed.
    pub fn printed_pid(&self) -> u32 {
        self.stdout_text().trim().parse().expect("a pid on stdout")
    }
}

impl Conn {
    /// Sends the preamble and reads the agent's SYNC and Hello.
    pub fn sync(stream: UnixStream) -> Conn {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        writer.write_all(&host_preamble()).expect("preamble");
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let hello = read_hello(&mut reader);
        Conn {
            stream,
            reader,
            pending: HashMap::new(),
            next_channel: 1,
            hello,
        }
    }

    /// Sends the preamble again on this stream and expects a new Hello.
    pub fn resync(&mut self) -> Hello {
        self.stream.write_all(&host_preamble()).expect("preamble");
        self.pending.clear();
        self.hello = read_hello(&mut self.reader);
        self.hello.clone()
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send(&mut self, channel: u32, kind: Kind, payload: Vec<u8>) {
        self.write_raw(&Frame::new(channel, kind, payload).to_bytes());
    }

    pub fn send_data(&mut self, channel: u32, bytes: &[u8]) {
        for chunk in bytes.chunks(MAX_PAYLOAD) {
            self.send(channel, Kind::Data, chunk.to_vec());
        }
    }

    /// Opens a channel with `request`; answers its id.
    pub fn open(&mut self, request: &Request) -> u32 {
        let channel = self.next_channel;
        self.next_channel += 1;
        self.write_raw(&Frame::json(channel, Kind::Request, request).to_bytes());
        channel
    }

    /// The next frame on `channel`; frames of other channels are kept for later.
    pub fn next(&mut self, channel: u32) -> Frame {
        if let Some(frame) = self.pending.get_mut(&channel).and_then(VecDeque::pop_front) {
            return frame;
        }
        loop {
            let frame = Frame::read_from(&mut self.reader).expect("a frame from the agent");
            if frame.channel == channel {
                return frame;
            }
            self.pending.entry(frame.channel).or_default().push_back(frame);
        }
    }

    /// The next reply on `channel`, with the frames that came before it.
    pub fn reply(&mut self, channel: u32) -> (Vec<Frame>, Reply) {
        let mut frames = Vec::new();
        loop {
            let frame = self.next(channel);
            if frame.kind == Kind::Response {
                return (frames, frame.parse().expect("a reply"));
            }
            frames.push(frame);
        }
    }

    pub fn request(&mut self, request: &Request) -> Reply {
        let channel = self.open(request);
        let (frames, reply) = self.reply(channel);
        assert!(frames.is_empty(), "frames before the reply: {frames:?}");
        reply
    }

    pub fn start_exec(&mut self, request: ExecRequest) -> u32 {
        self.open(&Request::Exec(request))
    }

    /// Collects an exec's output up to its reply.
    pub fn finish_exec(&mut self, channel: u32) -> Result<Output, Reply> {
        let (frames, reply) = self.reply(channel);
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        for frame in frames {
            match frame.kind {
                Kind::Stdout => stdout.extend(frame.payload),
                Kind::Stderr => stderr.extend(frame.payload),
                other => panic!("unexpected {other:?} frame in an exec"),
            }
        }
        match reply {
            Reply::Exited(exit) => Ok(Output { stdout, stderr, exit }),
            other => Err(other),
        }
    }

    pub fn exec(&mut self, request: ExecRequest, stdin: Option<&[u8]>) -> Result<Output, Reply> {
        let channel = self.start_exec(ExecRequest {
            stdin: stdin.is_some(),
            ..request
        });
        if let Some(bytes) = stdin {
            self.send_data(channel, bytes);
            self.send(channel, Kind::Eof, Vec::new());
        }
        self.finish_exec(channel)
    }

    /// Starts a shell that prints its pid and then sleeps for long;
    /// answers the channel and the pid.
    pub fn start_sleeper(&mut self, stdin: bool) -> (u32, u32) {
        let channel = self.start_exec(ExecRequest {
            stdin,
            ..exec(&["sh", "-c", "echo $$; exec sleep 300"])
        });
        let pid = String::from_utf8_lossy(&self.next(channel).payload)
            .trim()
            .parse()
            .expect("a pid");
        (channel, pid)
    }

    /// Runs argv and answers its output; panics when the exec fails.
    pub fn run(&mut self, cmd: &[&str]) -> Output {
        self.exec(exec(cmd), None).expect("the exec ran")
    }

    pub fn write_file(&mut self, request: WriteFileRequest, content: &[u8]) -> Reply {
        let channel = self.open(&Request::WriteFile(request));
        self.send_data(channel, content);
        self.send(channel, Kind::Eof, Vec::new());
        let (frames, reply) = self.reply(channel);
        assert!(frames.is_empty(), "frames before the reply: {frames:?}");
        reply
    }

    pub fn read_file(&mut self, path: &Path) -> Result<(FileInfo, Vec<u8>), Reply> {
        let channel = self.open(&Request::ReadFile {
            path: path.to_str().unwrap().into(),
        });
        let info = match self.reply(channel).1 {
            Reply::FileInfo(info) => info,
            other => return Err(other),
        };
        let (frames, reply) = self.reply(channel);
        assert_eq!(reply, Reply::Done { bytes: info.size }, "the end of a read");
        let mut content = Vec::new();
        let mut ended = false;
        for frame in frames {
            match frame.kind {
                Kind::Data if !ended => content.extend(frame.payload),
                Kind::Eof if !ended => ended = true,
                other => panic!("unexpected {other:?} frame in a read"),
            }
        }
        assert!(ended, "no Eof before the reply");
        Ok((info, content))
    }
}

fn read_hello(reader: &mut BufReader<UnixStream>) -> Hello {
    skip_to_sync(reader).expect("the agent's sync");
    let frame = Frame::read_from(reader).expect("the Hello frame");
    assert_eq!((frame.kind, frame.channel), (Kind::Hello, CONTROL_CHANNEL));
    frame.parse().expect("a Hello")
}

pub fn exec(cmd: &[&str]) -> ExecRequest {
    ExecRequest {
        cmd: cmd.iter().map(|arg| arg.to_string()).collect(),
        ..Default::default()
    }
}

/// The error a reply carries; panics on success.
pub fn error_of(reply: Reply) -> hatch_agent_proto::AgentError {
    match reply {
        Reply::Error(error) => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Whether a process is still there (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits (bounded) for a killed process to disappear.
pub fn gone_soon(pid: u32) -> bool {
    for _ in 0..200 {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}
