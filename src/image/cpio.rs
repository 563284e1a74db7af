//! Writing initramfs archives: cpio "newc" (what the kernel unpacks),
//! gzip-compressed, reproducible (all timestamps zero, sorted entries).
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::ImageError;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

pub struct CpioWriter<W: Write> {
    out: W,
    next_inode: u32,
}

/// Fields of one newc header that vary between entries.
struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter { out, next_inode: 1 }
    }

    fn pad(&mut self, len: usize) -> std::io::Result<()> {
        let padding = (4 - len % 4) % 4;
        self.out.write_all(&[0u8; 3][..padding])
    }

    fn header(&mut self, h: Header<'_>) -> std::io::Result<()> {
        let inode = self.next_inode;
        self.next_inode += 1;
        let fields = [
            inode,
            h.mode,
            0,
            0,
            h.nlink,
            0,
            h.size as u32,
            0,
            0,
            h.rdev.0,
            h.rdev.1,
            h.name.len() as u32 + 1,
            0,
        ];
        let mut text = String::from("070701");
        for field in fields {
            text.push_str(&format!("{field:08x}"));
        }
        self.out.write_all(text.as_bytes())?;
        self.out.write_all(h.name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + h.name.len() + 1)
    }

    pub fn directory(&mut self, name: &str, perm: u32) -> std::io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFDIR | perm,
            nlink: 2,
            size: 0,
            rdev: (0, 0),
        })
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> std::io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFREG | perm,
            nlink: 1,
            size: data.len(),
            rdev: (0, 0),
        })?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> std::io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            size: target.len(),
            rdev: (0, 0),
        })?;
        self.out.write_all(target.as_bytes())?;
        self.pad(target.len())
    }

    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> std::io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFCHR | perm,
            nlink: 1,
            size: 0,
            rdev: (major, minor),
        })
    }

    /// Adds everything below `root` (sorted, so archives are reproducible),
    /// keeping permissions and symlinks, with names relative to `root`.
    pub fn append_tree(&mut self, root: &Path) -> Result<(), ImageError> {
        self.append_dir(root, root)
    }

    fn append_dir(&mut self, root: &Path, dir: &Path) -> Result<(), ImageError> {
        fn io(path: &Path) -> impl Fn(std::io::Error) -> ImageError + '_ {
            move |e| ImageError::io("archiving", path, e)
        }
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .collect::<Result<_, _>>()
            .map_err(io(dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            let metadata = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            let perm = metadata.permissions().mode() & 0o7777;
            if metadata.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map_err(io(&path))?;
                self.symlink(&name, &target.to_string_lossy()).map_err(io(&path))?;
            } else if metadata.is_dir() {
                self.directory(&name, perm).map_err(io(&path))?;
                self.append_dir(root, &path)?;
            } else if metadata.is_file() {
                let data = std::fs::read(&path).map_err(io(&path))?;
                self.file(&name, perm, &data).map_err(io(&path))?;
            } else {
                return Err(ImageError::Build(format!(
                    "{} is neither file, directory nor symlink (mode {:o})",
                    path.display(),
                    metadata.mode()
                )));
            }
        }
        Ok(())
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.header(Header {
            name: "TRAILER!!!",
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        })?;
        Ok(self.out)
    }
}

/// Packs `root` plus a `/dev/console` node (the kernel needs it to give
/// /init a console; creating it on disk would need mknod) into a gzip
/// compressed newc archive at `out`.
pub fn write_initramfs(root: &Path, out: &Path) -> Result<(), ImageError> {
    let io = |e| ImageError::io("writing initramfs", out, e);
    let file = std::fs::File::create(out).map_err(io)?;
    let gzip = flate2::GzBuilder::new().write(std::io::BufWriter::new(file), flate2::Compression::best());
    let mut cpio = CpioWriter::new(gzip);
    cpio.append_tree(root)?;
    cpio.char_device("dev/console", 0o600, 5, 1).map_err(io)?;
    let gzip = cpio.finish().map_err(io)?;
    let mut buffered = gzip.finish().map_err(io)?;
    buffered.flush().map_err(io)?;
    buffered.get_ref().sync_all().map_err(io)
}
