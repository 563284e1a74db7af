//! The hostname: the kernel's, /etc/hostname, and the 127.0.1.1 line of
//! /etc/hosts that Debian-style images keep for their own name.

use std::io;
use std::path::Path;

use hatch_agent_proto::Reply;

use super::values::Hostname;
use crate::channel::io_error;

/// The files first, the kernel last: a request repeated after a failure
/// still sees the old name in the kernel and so still finds the hosts line.
pub fn set(hostname: &Hostname, etc: &Path) -> Result<(), Reply> {
    let old = current().map_err(|e| io_error("reading the hostname", &e))?;
    let hosts = etc.join("hosts");
    let text = match std::fs::read_to_string(&hosts) {
        Ok(text) => Some(text),
        // No file, or one that is not text: nothing of ours to keep right.
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::InvalidData) => None,
        Err(e) => return Err(io_error(&format!("reading {}", hosts.display()), &e)),
    };
    if let Some(updated) = text.and_then(|text| rename_loopback(&text, &old, hostname.as_str())) {
        crate::files::replace(&hosts, updated.as_bytes())
            .map_err(|e| io_error(&format!("writing {}", hosts.display()), &e))?;
    }
    let file = etc.join("hostname");
    if file.exists() {
        crate::files::replace(&file, format!("{}\n", hostname.as_str()).as_bytes())
            .map_err(|e| io_error(&format!("writing {}", file.display()), &e))?;
    }
    let name = hostname.as_str();
    // SAFETY: a valid buffer of that length.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } < 0 {
        return Err(io_error("sethostname", &io::Error::last_os_error()));
    }
    Ok(())
}

fn current() -> io::Result<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: a valid out buffer of that length.
    if unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    Ok(String::from_utf8_lossy(&buffer[..end]).into_owned())
}

/// /etc/hosts with `old` replaced by `new` among the names of 127.0.1.1
/// lines; None when no line names `old` (nothing to write). Only whole
/// names are replaced; other lines, names and comments stay as they are.
fn rename_loopback(text: &str, old: &str, new: &str) -> Option<String> {
    if old.is_empty() || old == new {
        return None;
    }
    let mut changed = false;
    let lines: Vec<String> = text
        .split_inclusive('\n')
        .map(|line| {
            let (body, ending) = match line.strip_suffix('\n') {
                Some(body) => (body, "\n"),
                None => (line, ""),
            };
            let (entry, comment) = match body.find('#') {
                Some(at) => body.split_at(at),
                None => (body, ""),
            };
            let mut fields = entry.split_whitespace();
            if fields.next() != Some("127.0.1.1") {
                return line.to_string();
            }
            let names: Vec<&str> = fields.collect();
            if !names.contains(&old) {
                return line.to_string();
            }
            changed = true;
            let names: Vec<&str> = names
                .into_iter()
                .map(|name| if name == old { new } else { name })
                .collect();
            let comment = if comment.is_empty() {
                String::new()
            } else {
                format!(" {comment}")
            };
            format!("127.0.1.1\t{}{comment}{ending}", names.join(" "))
        })
        .collect();
    changed.then(|| lines.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_line_of_the_old_name_gets_the_new_one() {
        let hosts =
            "127.0.0.1\tlocalhost\n127.0.1.1\tparent.example parent # set by the installer\n::1 localhost parent\n";
        assert_eq!(
            rename_loopback(hosts, "parent", "clone-1").unwrap(),
            "127.0.0.1\tlocalhost\n127.0.1.1\tparent.example clone-1 # set by the installer\n::1 localhost parent\n"
        );
        assert_eq!(
            rename_loopback("127.0.1.1 parent", "parent", "clone-1").unwrap(),
            "127.0.1.1\tclone-1"
        );
    }

    #[test]
    fn other_names_and_lines_are_left_alone() {
        for hosts in [
            "127.0.0.1 localhost parent\n",
            "127.0.1.1 parentish\n",
            "# 127.0.1.1 parent\n",
            "127.0.1.10 parent\n",
            "",
        ] {
            assert_eq!(rename_loopback(hosts, "parent", "clone-1"), None, "{hosts:?}");
        }
        assert_eq!(rename_loopback("127.0.1.1 parent\n", "parent", "parent"), None);
        assert_eq!(rename_loopback("127.0.1.1 parent\n", "", "clone-1"), None);
    }
}
