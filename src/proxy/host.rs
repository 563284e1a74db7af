//! Which route a request is for: `<subdomain>.<base_domain>` from its host.

/// Returns the route's subdomain (lowercase) when `host` is exactly one DNS
/// label under `base_domain`, ignoring case, a port and a trailing dot.
/// Anything else (the base domain itself, deeper names, other domains, IP
/// literals, invalid labels) is `None` and answered with 404.
pub fn subdomain_of(host: &str, base_domain: &str) -> Option<String> {
    // Compared without lowercasing copies: this runs on every request.
    let name = strip_port(host.trim())?;
    let name = name.strip_suffix('.').unwrap_or(name);
    let base = base_domain.strip_suffix('.').unwrap_or(base_domain);
    let cut = name.len().checked_sub(base.len())?;
    if !name.as_bytes()[cut..].eq_ignore_ascii_case(base.as_bytes()) {
        return None;
    }
    let label = name.get(..cut)?.strip_suffix('.')?.to_ascii_lowercase();
    is_dns_label(&label).then_some(label)
}

/// `name` or `name:port`; IPv6 literals (`[::1]:80`) are never route hosts.
fn strip_port(host: &str) -> Option<&str> {
    if host.starts_with('[') {
        return None;
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => Some(name),
        Some(_) => None,
        None => Some(host),
    }
}

/// A single lowercase DNS label: 1-63 of `a-z`, `0-9`, `-`, not starting or
/// ending with `-`.
fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::subdomain_of;

    #[test]
    fn accepts_one_label_under_the_base_domain() {
        let cases = [
            ("app.example.test", Some("app")),
            ("APP.Example.TEST", Some("app")),
            ("app.example.test:9090", Some("app")),
            ("app.example.test.", Some("app")),
            ("app.example.test.:80", Some("app")),
            ("my-app-2.example.test", Some("my-app-2")),
            (" app.example.test ", Some("app")),
        ];
        for (host, expected) in cases {
            assert_eq!(subdomain_of(host, "example.test").as_deref(), expected, "{host}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        let hosts = [
            "",
            "example.test",
            ".example.test",
            "a.b.example.test",
            "appexample.test",
            "app.example.org",
            "app.example.test:",
            "app.example.test:port",
            "-app.example.test",
            "app-.example.test",
            "ap_p.example.test",
            "[::1]:9090",
            "127.0.0.1:9090",
            "app.example.test:80:80",
        ];
        for host in hosts {
            assert_eq!(subdomain_of(host, "example.test"), None, "{host:?}");
        }
        let long = format!("{}.example.test", "a".repeat(64));
        assert_eq!(subdomain_of(&long, "example.test"), None);
    }

    #[test]
    fn base_domain_case_and_trailing_dot_do_not_matter() {
        assert_eq!(subdomain_of("app.localhost", "LOCALHOST.").as_deref(), Some("app"));
    }
}
