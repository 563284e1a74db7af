//! The CLI's connection settings and path handling.

use hatch::cli::http::{segment, Endpoint};

#[test]
fn hatch_url_forms() {
    assert_eq!(
        Endpoint::parse("http://127.0.0.1:8080").unwrap(),
        Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: 8080,
            tls: false
        }
    );
    assert_eq!(
        Endpoint::parse("http://example.test").unwrap(),
        Endpoint::Tcp {
            host: "example.test".into(),
            port: 80,
            tls: false
        }
    );
    assert_eq!(
        Endpoint::parse("http://[::1]:9000/").unwrap(),
        Endpoint::Tcp {
            host: "::1".into(),
            port: 9000,
            tls: false
        }
    );
    assert_eq!(
        Endpoint::parse("https://hatch.test:8443").unwrap(),
        Endpoint::Tcp {
            host: "hatch.test".into(),
            port: 8443,
            tls: true
        }
    );
    assert_eq!(
        Endpoint::parse("https://hatch.test/").unwrap(),
        Endpoint::Tcp {
            host: "hatch.test".into(),
            port: 443,
            tls: true
        }
    );
    assert_eq!(
        Endpoint::parse("unix:/run/hatch.sock").unwrap(),
        Endpoint::Unix("/run/hatch.sock".into())
    );
    for bad in [
        "127.0.0.1:8080",
        "https://x:port",
        "https://",
        "http://:80",
        "http://h:port",
        "ftp://x",
    ] {
        let error = Endpoint::parse(bad).expect_err(bad).to_string();
        assert!(error.contains("HATCH_URL"), "{bad}: {error}");
    }
}

#[test]
fn ssh_goes_to_the_daemon_host() {
    assert_eq!(Endpoint::parse("http://10.0.0.5:8080").unwrap().ssh_host(), "10.0.0.5");
    assert_eq!(Endpoint::parse("http://0.0.0.0:8080").unwrap().ssh_host(), "127.0.0.1");
    assert_eq!(Endpoint::parse("unix:/run/hatch.sock").unwrap().ssh_host(), "127.0.0.1");
}

#[test]
fn ids_from_the_command_line_stay_one_path_segment() {
    assert_eq!(segment("vm-abc123"), "vm-abc123");
    assert_eq!(segment("../keys?x=1"), "..%2Fkeys%3Fx%3D1");
    assert_eq!(segment("a b"), "a%20b");
}

#[test]
fn bash_completes_subcommands_from_the_generated_script() {
    let script = std::process::Command::new(env!("CARGO_BIN_EXE_hatch"))
        .args(["completion", "bash"])
        .output()
        .expect("hatch completion bash");
    assert!(script.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hatch.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    let completed = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            // bash calls a completion function with (command, word, previous word).
            "source {}; COMP_WORDS=(hatch vm \"\"); COMP_CWORD=2; _hatch hatch \"\" vm; echo \"${{COMPREPLY[@]}}\"",
            path.display()
        ))
        .output()
        .expect("bash");
    let words = String::from_utf8_lossy(&completed.stdout);
    for expected in ["create", "logs", "delete"] {
        assert!(
            words.split_whitespace().any(|w| w == expected),
            "{expected} not in {words:?}"
        );
    }
    for shell in ["zsh", "fish"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hatch"))
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
}
