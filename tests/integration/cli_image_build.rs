//! `hatch image build` without a daemon: the image is built (from the
//! shared test build cache, so no kernel is rebuilt) into the data
//! directory and registered in the database, where `hatch image list` and
//! `show` find it.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::daemon::{hatch_command_in, on_terminal};
use serde_json::Value;

/// HATCH_DATA_DIR, the shared cache, the host's mirror override if any, and
/// a HATCH_URL nobody listens on (so list/show read the database).
fn offline_env(root: &Path) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("HATCH_DATA_DIR", root.join("data").display().to_string()),
        (
            "HATCH_IMAGE_CACHE_DIR",
            common::images::shared_dir().join("cache").display().to_string(),
        ),
        ("HATCH_URL", format!("unix:{}", root.join("no-daemon.sock").display())),
        // Files the tests make to register live in `root`.
        ("HATCH_IMAGE_IMPORT_DIRS", root.display().to_string()),
        ("HATCH_AGENT_BIN", common::images::agent_bin().display().to_string()),
    ];
    if let Some(mirror) = std::env::var("HATCH_DEBIAN_MIRROR").ok().filter(|m| !m.is_empty()) {
        env.push(("HATCH_DEBIAN_MIRROR", mirror));
    }
    env
}

fn hatch(args: &[&str], env: &[(&'static str, String)]) -> Output {
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    hatch_command_in(None, args, &vars).output().expect("run hatch")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "hatch failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[tokio::test]
async fn a_built_minimal_image_is_registered_and_listed() {
    // Fills the shared cache if this is the first build on this machine.
    let reference = common::images::minimal_image().await;
    let root = tempfile::tempdir().unwrap();
    let env = offline_env(root.path());

    let built = hatch(
        &["image", "build", "--profile", "minimal", "--name", "tiny", "--json"],
        &env,
    );
    let progress = String::from_utf8_lossy(&built.stderr).into_owned();
    let image = json_of(&built);
    assert!(
        progress.contains("reusing cached build"),
        "progress is printed, and the cache was used:\n{progress}"
    );
    assert!(
        progress.contains(&format!("image {} ready", image["id"].as_str().unwrap())),
        "{progress}"
    );
    // Piped, progress is plain lines: no bar, no escape codes, no redraws.
    assert!(
        !progress.contains('\x1b') && !progress.contains('\r'),
        "escape codes in piped output: {progress:?}"
    );
    assert!(progress.lines().all(|l| l.starts_with("hatch: ")), "{progress}");

    let id = image["id"].as_str().unwrap();
    assert!(id.starts_with("img-"), "{image}");
    assert_eq!(image["name"], "tiny");
    assert_eq!(image["profile"], "minimal");
    assert_eq!(image["login_user"], reference.login_user);
    assert_eq!(image["rootfs_path"], Value::Null, "minimal images have no disk");
    let image_dir = root.path().join("data/images").join(id);
    let mut total = 0;
    for field in ["kernel_path", "initrd_path"] {
        let path = Path::new(
            image[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field} missing: {image}")),
        );
        assert_eq!(
            path.parent(),
            Some(image_dir.as_path()),
            "{field} lives in the image's directory"
        );
        total += std::fs::metadata(path).unwrap().len();
    }
    if let Some(bzimage) = image["bzimage_path"].as_str() {
        total += std::fs::metadata(bzimage).unwrap().len();
    }
    assert_eq!(image["size_bytes"].as_u64(), Some(total));

    let listed = json_of(&hatch(&["image", "list", "--json"], &env));
    assert_eq!(
        listed,
        Value::Array(vec![image.clone()]),
        "the database holds exactly the built image"
    );
    let shown = json_of(&hatch(&["image", "show", "tiny", "--json"], &env));
    assert_eq!(shown, image);
}

/// On a terminal (a pty made by `script`), the same build draws its steps
/// as a spinner line redrawn in place instead of printing lines.
#[tokio::test]
async fn on_a_terminal_the_build_shows_a_spinner() {
    common::images::minimal_image().await;
    let root = tempfile::tempdir().unwrap();
    let env = offline_env(root.path());
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let hatch = hatch_command_in(
        None,
        &["image", "build", "--profile", "minimal", "--name", "tty"],
        &vars,
    );
    let output = on_terminal(&hatch).output().expect("run script");
    let terminal = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{terminal}");
    // The first step is drawn with a spinner and the time it has taken…
    assert!(terminal.contains("resolving package versions"), "{terminal:?}");
    // …on one line cleared and redrawn (ANSI erase-line), not printed as a line.
    assert!(terminal.contains("\x1b[2K"), "{terminal:?}");
    assert!(!terminal.contains("hatch: resolving package versions"), "{terminal:?}");
    // Lines that stay are still printed.
    assert!(terminal.contains("hatch: reusing cached build"), "{terminal:?}");
}

#[test]
fn a_bad_name_is_refused_before_building_anything() {
    let root = tempfile::tempdir().unwrap();
    let env = offline_env(root.path());
    let refused = hatch(&["image", "build", "--profile", "minimal", "--name", "no spaces"], &env);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("name"), "{stderr}");
    assert!(!root.path().join("data/images").exists(), "no image directory was made");
    assert_eq!(
        json_of(&hatch(&["image", "list", "--json"], &env)),
        serde_json::json!([])
    );
}

#[test]
fn register_without_a_daemon_checks_the_files_and_stores_the_image() {
    let root = tempfile::tempdir().unwrap();
    let env = offline_env(root.path());
    let (elf, _, initrd) = common::daemon::fake_boot_files(root.path());
    let (elf, initrd) = (elf.to_str().unwrap(), initrd.to_str().unwrap());

    let refused = hatch(
        &["image", "register", "--name", "r", "--kernel", elf, "--initrd", elf],
        &env,
    );
    assert!(!refused.status.success(), "an ELF file is no initrd");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("initrd_path"));

    let image = json_of(&hatch(
        &[
            "image", "register", "--json", "--name", "r", "--kernel", elf, "--initrd", initrd,
        ],
        &env,
    ));
    assert_eq!(
        (image["profile"].as_str(), image["kernel_path"].as_str()),
        (Some("registered"), Some(elf))
    );
    assert_eq!(
        json_of(&hatch(&["image", "list", "--json"], &env)),
        Value::Array(vec![image])
    );
}

#[test]
fn a_listing_piped_into_a_reader_that_goes_away_ends_quietly() {
    let root = tempfile::tempdir().unwrap();
    let env = offline_env(root.path());
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // As `hatch image list --json | head -c 0`: the reader is gone before
    // anything is printed.
    let mut child = hatch_command_in(None, &["image", "list", "--json"], &vars)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hatch");
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        output.status.success() || output.status.signal() == Some(13),
        "{:?}: {stderr}",
        output.status
    );
}
