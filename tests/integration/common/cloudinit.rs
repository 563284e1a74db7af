//! Helpers for the cloud-init seed tests: reading a seed image back with
//! independent tools (mtools, dosfstools, PyYAML as cloud-init uses it) and
//! with the fatfs crate, and generating real SSH keys with ssh-keygen.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hatch::cloudinit::{write_seed, SeedInput};

/// A seed written to a file in its own temporary directory.
pub struct SeedImage {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl SeedImage {
    pub async fn write(input: &SeedInput) -> SeedImage {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seed.img");
        write_seed(input, &path).await.expect("write_seed");
        SeedImage { dir, path }
    }

    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("read seed image")
    }

    /// `fsck.vfat -n` (check only) must report no problems.
    pub fn assert_fsck_clean(&self) {
        let out = run(Command::new("fsck.vfat").arg("-n").arg(&self.path));
        assert!(out.status.success(), "fsck.vfat -n failed: {}", describe(&out));
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(!report.contains("Dirty bit"), "fsck.vfat: {report}");
    }

    /// The label as mtools reads it.
    pub fn mtools_label(&self) -> String {
        let out = self.mtools("mlabel", &["-s", "::"]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("Volume label is")
            .trim()
            .to_owned()
    }

    /// File names in the root directory as mtools lists them (long names).
    pub fn mtools_names(&self) -> Vec<String> {
        let out = self.mtools("mdir", &["-b", "::"]);
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| line.trim().trim_start_matches("::/").to_owned())
            .filter(|name| !name.is_empty())
            .collect();
        names.sort();
        names
    }

    /// A file's bytes through `mtype` (binary, no text conversion).
    pub fn mtools_read(&self, name: &str) -> Vec<u8> {
        self.mtools("mtype", &[&format!("::{name}")]).stdout
    }

    fn mtools(&self, program: &str, args: &[&str]) -> Output {
        let out = run(Command::new(program)
            .arg("-i")
            .arg(&self.path)
            .args(args)
            .env("MTOOLS_SKIP_CHECK", "1"));
        assert!(out.status.success(), "{program} failed: {}", describe(&out));
        out
    }

    /// Opens the image with the fatfs crate.
    pub fn fatfs(&self) -> fatfs::FileSystem<std::io::Cursor<Vec<u8>>> {
        fatfs::FileSystem::new(std::io::Cursor::new(self.bytes()), fatfs::FsOptions::new())
            .expect("fatfs opens the seed")
    }

    pub fn fatfs_names(&self) -> Vec<String> {
        let fs = self.fatfs();
        let mut names: Vec<String> = fs
            .root_dir()
            .iter()
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        names.sort();
        names
    }

    pub fn fatfs_read(&self, name: &str) -> Vec<u8> {
        let fs = self.fatfs();
        let mut contents = Vec::new();
        fs.root_dir()
            .open_file(name)
            .expect("open file")
            .read_to_end(&mut contents)
            .expect("read file");
        contents
    }

    /// A file read both ways; the two readers must agree.
    pub fn read_both(&self, name: &str) -> Vec<u8> {
        let via_fatfs = self.fatfs_read(name);
        let via_mtools = self.mtools_read(name);
        assert_eq!(via_fatfs, via_mtools, "fatfs and mtools disagree about {name}");
        via_fatfs
    }

    /// Names in the root directory, both readers agreeing.
    pub fn names_both(&self) -> Vec<String> {
        let names = self.fatfs_names();
        assert_eq!(names, self.mtools_names(), "fatfs and mtools list different files");
        names
    }
}

/// Parses YAML with PyYAML's safe loader, the parser cloud-init itself
/// uses, and returns the result as JSON.
pub fn pyyaml_load(text: &[u8]) -> serde_json::Value {
    let out = run_with_stdin(
        Command::new("python3").args([
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.buffer.read())))",
        ]),
        text,
    );
    assert!(out.status.success(), "PyYAML rejected the document: {}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// gzip-compressed bytes from the host's gzip, as a user would upload them.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let out = run_with_stdin(Command::new("gzip").args(["-9", "-c"]), data);
    assert!(out.status.success(), "gzip failed: {}", describe(&out));
    out.stdout
}

/// Where [`ssh_keygen`] puts the private key of that type and size.
pub fn ssh_private_key_path(dir: &Path, key_type: &str, bits: Option<u32>) -> PathBuf {
    dir.join(format!("id_{key_type}_{}", bits.unwrap_or(0)))
}

/// A freshly generated OpenSSH public key line (`type base64 comment`); the
/// private key is at [`ssh_private_key_path`].
pub fn ssh_keygen(dir: &Path, key_type: &str, bits: Option<u32>, comment: &str) -> String {
    let key = ssh_private_key_path(dir, key_type, bits);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", key_type, "-N", "", "-C", comment, "-f"])
        .arg(&key);
    if let Some(bits) = bits {
        cmd.args(["-b", &bits.to_string()]);
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "ssh-keygen failed: {}", describe(&out));
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("read .pub");
    public.trim_end().to_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("stdin writer").expect("write stdin");
    out
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
