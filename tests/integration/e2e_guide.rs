//! The networking guide works in the default image, word for word: every
//! command of its "Troubleshooting Network Issues" section and of "DNS and
//! Internet Access", taken from the guide's text, runs as written against a
//! real `debian` guest made with the guide's "Configuring Custom DNS"
//! cloud-config: host-side commands in the Hatch host's namespace,
//! commands after `ssh root@<host> -p <port>` in the guest over that SSH
//! login. The internet they reach is the test's own (`common::internet`).
//!
//! What is not literally the guide's: the API is the test daemon's unix
//! socket (`curl --unix-socket S http://hatch/...` for
//! `https://api.hatch.example.com/...`), the data directory is the test's
//! (for `/var/lib/hatch`), ssh is given the test's key and an empty
//! known-hosts file (`-F config`), and `sudo systemctl restart hatch` is a
//! SIGTERM and start of the test daemon. The VM takes the guide's example
//! address, MAC and first SSH port so every other word stays as written.

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::e2e::{Topology, VmView};
use common::guide::{self, Block};
use common::hatchd::{TestDaemon, TestKey};
use common::internet::{FakeInternet, GOOGLE_IP};
use serde_json::json;

/// The guide's example VM: its address, MAC and SSH port.
const GUIDE_IP: &str = "192.168.241.10";
const GUIDE_MAC: &str = "02:fc:00:00:00:01";
const GUIDE_SSH_PORT: u16 = 2200;

#[tokio::test(flavor = "multi_thread")]
async fn every_troubleshooting_command_of_the_guide_works_as_written() {
    let image = common::images::debian_image().await;
    let text = guide::text();
    let topo = Topology::new();
    let internet = FakeInternet::attach(&topo);
    let mut daemon = TestDaemon::start(topo.host_ns(), &[]);
    let image_id = topo.register_image(&daemon, &image);
    let key = TestKey::generate();

    // "Configuring Custom DNS", word for word, plus trust in the test
    // internet's CA (so `curl -I https://google.com` can verify it).
    let custom_dns = guide::cloud_config_after(&text, "Configuring Custom DNS");
    assert!(
        custom_dns.contains("systemctl restart systemd-resolved"),
        "{custom_dns}"
    );
    let user_data = format!(
        "{custom_dns}ca_certs:\n  trusted:\n    - |\n{}",
        indent(&internet.ca_pem, 6)
    );
    let (status, vm) = daemon.api(
        "POST",
        "/vms?wait=ready&timeout=600",
        Some(&json!({
            "image_id": image_id,
            "ssh_authorized_keys": [key.public],
            "user_data": user_data,
            "guest_ip": GUIDE_IP,
            "guest_mac": GUIDE_MAC,
            "mem_mib": 512,
        })),
    );
    assert_eq!(status, 201, "{vm}\n{}", daemon.log());
    let vm = VmView::from(&vm);
    assert_eq!((vm.guest_ip.as_str(), vm.ssh_port), (GUIDE_IP, GUIDE_SSH_PORT));

    let run = GuideRun::new(&topo, &daemon, &key, &vm);
    // `ssh root@<host> -p <port>` logs in with the key given at creation.
    let status = run.guest_until_ok("cloud-init status --wait --long || true", Duration::from_secs(600));
    assert!(status.contains("status: done"), "cloud-init: {status}");
    // The image's own user stays, with sudo.
    assert_eq!(run.ssh_as("debian", "sudo -n id -u").trim(), "0");

    // "DNS and Internet Access": "SSH into the VM and verify".
    let dns = guide::section(&text, "DNS and Internet Access", "Configuring Custom DNS");
    for block in guide::blocks(dns) {
        for command in &block.commands {
            run.check(&block, command, &run.guest("root", command));
        }
    }

    // The custom DNS servers are in use, next to the one DHCP gave, which
    // still answers.
    let servers = run.ssh_as("root", "resolvectl dns");
    assert!(servers.contains("Global: 1.1.1.1 8.8.8.8"), "{servers}");
    assert!(servers.contains("(eth0): 192.168.241.1"), "{servers}");
    let via_dhcp = run.ssh_as("root", "dig +short google.com @192.168.241.1");
    assert_eq!(via_dhcp.trim(), GOOGLE_IP);

    let troubleshooting = guide::section(
        &text,
        "Troubleshooting Network Issues",
        "Network Configuration Environment Variables",
    );
    let blocks = guide::blocks(troubleshooting);
    assert!(
        blocks.len() >= 10,
        "the troubleshooting section lost its commands: {blocks:?}"
    );
    for block in &blocks {
        run_block(&run, &mut daemon, block);
    }
    // After the restart the guide asked for: dnsmasq serves again, and the
    // VM kept running with its address and SSH port.
    let ps = run.host("ps aux | grep dnsmasq");
    assert!(String::from_utf8_lossy(&ps.stdout).contains(&run.data_dir_conf()));
    assert_eq!(run.ssh_as("root", "hostname").trim(), vm.id);
    assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
    drop(internet);
}

/// Runs one commented block: on the host, until an `ssh` line, after which
/// the block's commands run in the guest over that login.
fn run_block(run: &GuideRun, daemon: &mut TestDaemon, block: &Block) {
    let mut login: Option<Vec<String>> = None;
    for command in &block.commands {
        let output = if let Some(ssh) = command.strip_prefix("ssh ") {
            let words = run.ssh_words(ssh);
            let output = run.ssh_words_run(&words, "id -un");
            login = Some(words);
            output
        } else if let Some(words) = &login {
            run.ssh_words_run(words, command)
        } else if command == "sudo systemctl restart hatch" {
            assert!(
                daemon.terminate(Duration::from_secs(60)),
                "hatch did not stop on SIGTERM"
            );
            daemon.start_again();
            run.host("true")
        } else {
            run.host(&run.on_this_host(daemon, command))
        };
        run.check(block, command, &output);
    }
}

/// The running guide: where things are, and what each command must show.
struct GuideRun<'a> {
    topo: &'a Topology,
    vm: &'a VmView,
    data_dir: PathBuf,
    ssh_config: PathBuf,
    _dir: tempfile::TempDir,
}

impl<'a> GuideRun<'a> {
    fn new(topo: &'a Topology, daemon: &TestDaemon, key: &TestKey, vm: &'a VmView) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ssh_config = dir.path().join("ssh_config");
        std::fs::write(
            &ssh_config,
            format!(
                "Host *\n  IdentityFile {}\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n  ConnectTimeout 10\n  LogLevel ERROR\n",
                key.private.display()
            ),
        )
        .expect("ssh config");
        GuideRun {
            topo,
            vm,
            data_dir: daemon.data_path().to_path_buf(),
            ssh_config,
            _dir: dir,
        }
    }

    /// A host command with the test's API, key, VM id and data directory
    /// in place of the guide's placeholders.
    fn on_this_host(&self, daemon: &TestDaemon, command: &str) -> String {
        command
            .replace(
                "https://api.hatch.example.com",
                &format!("--unix-socket {} http://hatch", daemon.socket.display()),
            )
            .replace("YOUR_API_KEY", &daemon.admin_key())
            .replace("vm-abc123", &self.vm.id)
            .replace("/var/lib/hatch", &self.data_dir.display().to_string())
    }

    /// `bash -c command` in the Hatch host's namespace.
    fn host(&self, command: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", self.topo.host_ns(), "bash", "-c", command])
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec bash")
    }

    /// The words of an `ssh ...` line (after `ssh`) with the test's
    /// config (key, no known hosts) first. The guide's `[email protected]`
    /// is its `root@<host>` mangled by an e-mail obfuscator: the test's host.
    fn ssh_words(&self, line: &str) -> Vec<String> {
        // (With a no-break space inside, as the obfuscator wrote it.)
        let line = line.replace("[email\u{a0}protected]", &format!("root@{}", self.topo.host_addr()));
        let mut words = vec!["-F".to_string(), self.ssh_config.display().to_string()];
        words.extend(line.split_whitespace().map(String::from));
        words
    }

    fn ssh_words_run(&self, words: &[String], command: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", self.topo.client_ns(), "ssh"])
            .args(words)
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .expect("ssh")
    }

    /// `ssh user@<host> -p <port> command`, as the guide logs in.
    fn guest(&self, user: &str, command: &str) -> Output {
        let login = format!("{user}@{} -p {}", self.topo.host_addr(), self.vm.ssh_port);
        self.ssh_words_run(&self.ssh_words(&login), command)
    }

    /// [`guest`](Self::guest), which must succeed; its stdout.
    fn ssh_as(&self, user: &str, command: &str) -> String {
        let output = self.guest(user, command);
        assert!(
            output.status.success(),
            "ssh {user}@ {command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// [`ssh_as`](Self::ssh_as) root, retried while the guest boots.
    fn guest_until_ok(&self, command: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.guest("root", command);
            if output.status.success() {
                return String::from_utf8_lossy(&output.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "ssh root@ never worked: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Asserts `command` succeeded and showed what the guide has it check.
    fn check(&self, block: &Block, command: &str, output: &Output) {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let shown = format!(
            "`{command}` (\"# {}\") exited {}:\n{stdout}\n{}",
            block.comment,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let expected = self.expectation(command);
        // telnet ends with "Connection closed" when its input does.
        let exit_ok = output.status.success() || command.starts_with("telnet ");
        assert!(
            exit_ok && stdout.contains(&expected),
            "expected {expected:?} from {shown}"
        );
    }

    /// What each of the guide's commands must show; a command this test
    /// does not know fails it (the guide changed: say what it checks).
    fn expectation(&self, command: &str) -> String {
        let api = "curl https://api.hatch.example.com/vms/vm-abc123 -H \"Authorization: Bearer YOUR_API_KEY\" | jq";
        let expected = match command {
            c if c == format!("{api} '.enable_network'") => "true",
            c if c == format!("{api} '.state'") => "\"running\"",
            "ip addr show fcbridge" => "inet 192.168.241.1/24",
            "ps aux | grep dnsmasq" => return format!("--conf-file={}", self.data_dir_conf()),
            "sudo iptables -t nat -L PREROUTING -n -v | grep 2200" => "2200",
            "ping -c 3 192.168.241.10" | "ping -c 3 8.8.8.8" => " 0% packet loss",
            "telnet 192.168.241.10 22" => "Connected to 192.168.241.10",
            "echo 1 | sudo tee /proc/sys/net/ipv4/ip_forward" => "1",
            "sudo iptables -t nat -L POSTROUTING -n -v | grep MASQUERADE" => "MASQUERADE",
            "sudo iptables -t nat -A POSTROUTING -s 192.168.241.0/24 -j MASQUERADE" => "",
            c if c.starts_with("ssh ") => "root",
            "curl -I https://google.com" => "server: fake-google",
            "nslookup google.com" => return format!("Address: {GOOGLE_IP}"),
            "cat /var/lib/hatch/dhcp/dnsmasq.conf" | "grep \"02:fc:00:00:00:01\" /var/lib/hatch/dhcp/dnsmasq.conf" => {
                return format!("{GUIDE_MAC},{GUIDE_IP}")
            }
            "sudo systemctl restart hatch" => "",
            other => panic!("the guide has a command this test does not know: {other:?}"),
        };
        expected.to_string()
    }

    fn data_dir_conf(&self) -> String {
        format!("{}/dhcp/dnsmasq.conf", self.data_dir.display())
    }
}

fn indent(text: &str, by: usize) -> String {
    text.lines().map(|line| format!("{:by$}{line}\n", "")).collect()
}
