//! The dashboard's files at `/ui`: served without a key (they hold no
//! data) with their content types and security headers; the API next to
//! them still needs a key, and nothing but the compiled-in files is served.

use crate::common;

use std::process::Command;

use common::daemon::TestApi;

/// Status, headers (lower-cased) and body of a GET without a key.
fn get(api: &TestApi, path: &str) -> (u16, String, String) {
    let output = Command::new("curl")
        .args(["-sS", "--path-as-is", "-D", "/dev/stderr", "--unix-socket"])
        .arg(&api.socket)
        .arg(format!("http://hatch{path}"))
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&output.stderr).to_lowercase();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, headers, String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn dashboard_files_need_no_key_and_carry_security_headers() {
    let api = TestApi::start().await;
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/sse.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
    ] {
        let (status, headers, body) = get(&api, path);
        assert_eq!(status, 200, "{path}: {headers}");
        assert!(
            headers.contains(&format!("content-type: {content_type}\r\n")),
            "{path}: {headers}"
        );
        assert!(headers.contains("x-content-type-options: nosniff"), "{path}: {headers}");
        let csp = headers
            .lines()
            .find_map(|l| l.strip_prefix("content-security-policy: "))
            .unwrap_or_else(|| panic!("{path} has no Content-Security-Policy: {headers}"));
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert!(!body.is_empty(), "{path}");
    }
    let (_, _, page) = get(&api, "/ui");
    assert!(
        page.contains("<script type=\"module\" src=\"/ui/app.js\"></script>"),
        "{page}"
    );

    // Only the compiled-in files: not the data directory, not anything else.
    for path in [
        "/ui/nope.js",
        "/ui/..%2Fadmin.key",
        "/ui/../admin.key",
        "/ui/%2e%2e/admin.key",
    ] {
        let (status, _, body) = get(&api, path);
        assert!(status == 404 || status == 401, "{path}: {status} {body}");
        assert!(!body.contains(&api.admin_key), "{path} leaked the admin key");
    }
    // The API beside it still needs a key.
    for path in ["/vms", "/events", "/uix", "/keys/me"] {
        assert_eq!(get(&api, path).0, 401, "{path}");
    }
}
