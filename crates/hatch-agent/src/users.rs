//! Accounts from /etc/passwd and /etc/group, read directly: a static
//! glibc's getpwnam depends on NSS modules it cannot load.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    /// Supplementary groups, the primary group first.
    pub groups: Vec<u32>,
}

/// The account `spec` names (a user name or a numeric uid; root when
/// absent). An image without /etc/passwd still has root.
pub fn lookup(spec: Option<&str>, etc: &Path) -> Result<Account, String> {
    let spec = spec.unwrap_or("0");
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let mut account = match find_user(&passwd, spec) {
        Some(account) => account,
        None if spec == "0" || spec == "root" => Account {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
            shell: "/bin/sh".into(),
            groups: Vec::new(),
        },
        None => return Err(format!("no user {spec:?} in /etc/passwd")),
    };
    let group = std::fs::read_to_string(etc.join("group")).unwrap_or_default();
    account.groups = groups_of(&group, &account.name, account.gid);
    Ok(account)
}

fn find_user(passwd: &str, spec: &str) -> Option<Account> {
    let by_uid: Option<u32> = spec.parse().ok();
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 || line.starts_with('#') {
            return None;
        }
        let uid: u32 = fields[2].parse().ok()?;
        let gid: u32 = fields[3].parse().ok()?;
        let matches = match by_uid {
            Some(wanted) => uid == wanted,
            None => fields[0] == spec,
        };
        matches.then(|| Account {
            name: fields[0].to_string(),
            uid,
            gid,
            home: fields[5].to_string(),
            shell: if fields[6].is_empty() { "/bin/sh" } else { fields[6] }.to_string(),
            groups: Vec::new(),
        })
    })
}

fn groups_of(group: &str, name: &str, primary: u32) -> Vec<u32> {
    let mut groups = vec![primary];
    for line in group.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || line.starts_with('#') {
            continue;
        }
        let Ok(gid) = fields[2].parse::<u32>() else { continue };
        if fields[3].split(',').any(|member| member.trim() == name) && !groups.contains(&gid) {
            groups.push(gid);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # a comment\n\
        broken line\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        dev:x:1000:1000::/home/dev:\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:dev,other\ndocker:x:999:dev\nstaff:x:50:other\n";

    #[test]
    fn users_are_found_by_name_or_uid_with_their_groups() {
        let dev = find_user(PASSWD, "dev").unwrap();
        assert_eq!(
            (dev.uid, dev.gid, dev.home.as_str(), dev.shell.as_str()),
            (1000, 1000, "/home/dev", "/bin/sh")
        );
        assert_eq!(find_user(PASSWD, "65534").unwrap().name, "nobody");
        assert_eq!(find_user(PASSWD, "ghost"), None);
        assert_eq!(find_user(PASSWD, "4242"), None);
        assert_eq!(groups_of(GROUP, "dev", 1000), vec![1000, 10, 999]);
        assert_eq!(groups_of(GROUP, "nobody", 65534), vec![65534]);
    }

    #[test]
    fn root_exists_without_a_passwd_file() {
        let empty = std::env::temp_dir().join("hatch-agent-no-etc");
        let root = lookup(None, &empty).unwrap();
        assert_eq!((root.uid, root.home.as_str()), (0, "/root"));
        assert!(lookup(Some("dev"), &empty).is_err());
    }
}
