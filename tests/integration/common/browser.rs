//! A real headless Chromium driven over the W3C WebDriver protocol
//! (chromedriver), both running inside a test-made network namespace: the
//! page reaches what listens on that namespace's loopback and nothing else
//! (background networking off: the machine has no internet). The protocol
//! is plain JSON over HTTP, spoken with curl run in the namespace.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const CHROMIUM: &str = "chromium";
const CHROMEDRIVER: &str = "chromedriver";
const DRIVER_PORT: u16 = 9515;
/// A page load or a screenshot can take a while on a loaded host.
const CURL: &[&str] = &["curl", "-sS", "--max-time", "120"];

/// The web element reference key of the W3C protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium and chromedriver from PATH. Without them the test fails under
/// CI (`CI` set: it must never pass by skipping) and elsewhere is skipped
/// with a visible message.
pub fn chromium_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    let found = hatch::sys::cmd::find_on_path(CHROMIUM).zip(hatch::sys::cmd::find_on_path(CHROMEDRIVER));
    if found.is_none() {
        let why = "no chromium and chromedriver on PATH (scripts/install-deps installs them)";
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: {why}; CI must run the browser tests"
        );
        eprintln!("SKIPPED {test}: {why}");
    }
    found
}

/// `127.0.0.1:port` inside a namespace forwarded to a unix socket (the
/// test daemon's API), so a browser there can load the page; stopped when
/// dropped.
pub struct TcpToUnix(Child);

impl TcpToUnix {
    pub fn start(ns: &super::netns::TestNetns, port: u16, socket: &std::path::Path) -> TcpToUnix {
        let forward = TcpToUnix(ns.spawn(
            "socat",
            &[
                &format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"),
                &format!("UNIX-CONNECT:{}", socket.display()),
            ],
        ));
        let listening = super::netns::wait_for(Duration::from_secs(10), || {
            let sockets = ns.exec_ok("ss", &["-Hltn", &format!("sport = :{port}")]);
            sockets.contains(&format!(":{port}")).then_some(())
        });
        assert!(listening.is_some(), "socat is not listening on {port} in {}", ns.name());
        forward
    }
}

impl Drop for TcpToUnix {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Browser {
    netns: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver in `netns` and a headless Chromium session with a
    /// new empty profile and a `width`×`height` window.
    pub fn start(netns: &str, chromium: &std::path::Path, chromedriver: &std::path::Path, size: (u32, u32)) -> Browser {
        let driver = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(chromedriver)
            .arg(format!("--port={DRIVER_PORT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::Builder::new()
            .prefix("hatch-chromium-")
            .tempdir_in("/var/tmp")
            .expect("profile dir");
        let mut browser = Browser {
            netns: netns.to_string(),
            session: String::new(),
            driver,
            _profile: profile,
        };
        let up = super::netns::wait_for(Duration::from_secs(30), || {
            browser
                .raw("GET", "/status", None)
                .ok()
                .filter(|v| v["value"]["ready"] == true)
        });
        assert!(up.is_some(), "chromedriver did not come up in {netns}");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", browser._profile.path().display()),
            &format!("--window-size={},{}", size.0, size.1),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args }
        }}});
        let created = browser
            .raw("POST", "/session", Some(&capabilities))
            .unwrap_or_else(|e| panic!("{e}"));
        browser.session = created["value"]["sessionId"].as_str().expect("session id").to_string();
        browser
    }

    /// One protocol request; `Err` with the driver's message on an error answer.
    fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.netns])
            .args(CURL)
            .args(["-X", method]);
        if let Some(body) = body {
            command.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &body.to_string(),
            ]);
        }
        command.arg(format!("http://127.0.0.1:{DRIVER_PORT}{path}"));
        let output = command.stdin(Stdio::null()).output().expect("curl");
        let answer: Value = serde_json::from_slice(&output.stdout)
            .map_err(|_| format!("{method} {path}: {}", String::from_utf8_lossy(&output.stderr)))?;
        if let Some(error) = answer["value"]["error"].as_str() {
            return Err(format!("{method} {path}: {error}: {}", answer["value"]["message"]));
        }
        Ok(answer)
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.raw(method, &path, body.as_ref()).unwrap_or_else(|e| panic!("{e}"))["value"].take()
    }

    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.command("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// Runs `script` asynchronously: it ends by calling the last of
    /// `arguments` with the result.
    pub fn execute_async(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The first element matching `css`, waiting up to `timeout` for it.
    pub fn find(&self, css: &str, timeout: Duration) -> String {
        let path = format!("/session/{}/element", self.session);
        let body = json!({ "using": "css selector", "value": css });
        let found = super::netns::wait_for(timeout, || self.raw("POST", &path, Some(&body)).ok());
        let found =
            found.unwrap_or_else(|| panic!("no element {css} after {timeout:?}; page text:\n{}", self.page_text()));
        found["value"][ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element id in {found}"))
            .to_string()
    }

    /// Clicks the first element matching `css`; found again if the page
    /// redrew it between finding and clicking (a live list does).
    pub fn click(&self, css: &str) {
        for _ in 0..10 {
            let element = self.find(css, Duration::from_secs(30));
            let path = format!("/session/{}/element/{element}/click", self.session);
            match self.raw("POST", &path, Some(&json!({}))) {
                Ok(_) => return,
                Err(error) if error.contains("stale element reference") => continue,
                Err(error) => panic!("{error}"),
            }
        }
        panic!("{css} kept being redrawn before it could be clicked");
    }

    /// Clears the field `css` and types `text` into it.
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css, Duration::from_secs(30));
        // Found is not yet usable: a page still laying itself out (a slow
        // machine, a CI run) can have the field in the DOM but not
        // interactable for a moment.
        let clear = format!("/session/{}/element/{element}/clear", self.session);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Err(error) = self.raw("POST", &clear, Some(&json!({}))) {
            if !error.contains("element not interactable") || std::time::Instant::now() > deadline {
                panic!("{error}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !text.is_empty() {
            self.command(
                "POST",
                &format!("/element/{element}/value"),
                Some(json!({ "text": text })),
            );
        }
    }

    /// The rendered text of the first element matching `css` ("" if none).
    pub fn text_of(&self, css: &str) -> String {
        self.execute(
            "const node = document.querySelector(arguments[0]); return node ? node.innerText : '';",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    pub fn page_text(&self) -> String {
        self.raw(
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            Some(&json!({ "script": "return document.body ? document.body.innerText : ''", "args": [] })),
        )
        .map(|v| v["value"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|e| e)
    }

    /// Polls `check` until it returns `Some` (panics after `timeout`, with the page's text).
    pub fn wait<T>(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Browser) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            if Instant::now() > deadline {
                panic!("the page never showed {what}; page text:\n{}", self.page_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 PNG"))
            .expect("screenshot is base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
        }
        // `ip netns exec` execs chromedriver: the child is the driver.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A PNG's size and pixels (8-bit RGB or RGBA, as Chromium writes them),
/// decoded with nothing but zlib, so a test can tell a rendered page from
/// a blank one.
pub struct Png {
    pub width: u32,
    pub height: u32,
    /// Bytes per pixel: 3 (RGB) or 4 (RGBA).
    pub channels: usize,
    pub pixels: Vec<u8>,
}

impl Png {
    pub fn decode(bytes: &[u8]) -> Result<Png, String> {
        use std::io::Read;
        const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
        let mut rest = bytes.strip_prefix(SIGNATURE).ok_or("not a PNG (signature)")?;
        let (mut width, mut height, mut channels) = (0u32, 0u32, 0usize);
        let mut compressed = Vec::new();
        while rest.len() >= 12 {
            let length = u32::from_be_bytes(rest[0..4].try_into().unwrap()) as usize;
            let kind = &rest[4..8];
            let data = rest.get(8..8 + length).ok_or("truncated chunk")?;
            match kind {
                b"IHDR" => {
                    width = u32::from_be_bytes(data[0..4].try_into().unwrap());
                    height = u32::from_be_bytes(data[4..8].try_into().unwrap());
                    let (depth, colour, interlace) = (data[8], data[9], data[12]);
                    channels = match (depth, colour, interlace) {
                        (8, 2, 0) => 3,
                        (8, 6, 0) => 4,
                        other => return Err(format!("unsupported PNG layout (depth, colour, interlace) {other:?}")),
                    };
                }
                b"IDAT" => compressed.extend_from_slice(data),
                b"IEND" => break,
                _ => {}
            }
            rest = &rest[12 + length..];
        }
        if width == 0 || height == 0 {
            return Err("no IHDR".into());
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&compressed[..])
            .read_to_end(&mut raw)
            .map_err(|e| format!("image data: {e}"))?;
        let stride = width as usize * channels;
        if raw.len() != height as usize * (stride + 1) {
            return Err(format!(
                "image data is {} bytes, expected {}",
                raw.len(),
                height as usize * (stride + 1)
            ));
        }
        let mut pixels = vec![0u8; height as usize * stride];
        for y in 0..height as usize {
            let filter = raw[y * (stride + 1)];
            let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
            for x in 0..stride {
                let left = if x >= channels {
                    pixels[y * stride + x - channels]
                } else {
                    0
                };
                let up = if y > 0 { pixels[(y - 1) * stride + x] } else { 0 };
                let up_left = if y > 0 && x >= channels {
                    pixels[(y - 1) * stride + x - channels]
                } else {
                    0
                };
                let predicted = match filter {
                    0 => 0,
                    1 => left,
                    2 => up,
                    3 => ((left as u16 + up as u16) / 2) as u8,
                    4 => paeth(left, up, up_left),
                    other => return Err(format!("unknown filter {other}")),
                };
                pixels[y * stride + x] = line[x].wrapping_add(predicted);
            }
        }
        Ok(Png {
            width,
            height,
            channels,
            pixels,
        })
    }

    /// How many different colours the image has (alpha ignored), up to `cap`.
    pub fn colours(&self, cap: usize) -> usize {
        let mut seen = std::collections::HashSet::new();
        for pixel in self.pixels.chunks(self.channels) {
            seen.insert((pixel[0], pixel[1], pixel[2]));
            if seen.len() >= cap {
                break;
            }
        }
        seen.len()
    }
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = a as i16 + b as i16 - c as i16;
    let (pa, pb, pc) = ((p - a as i16).abs(), (p - b as i16).abs(), (p - c as i16).abs());
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}
