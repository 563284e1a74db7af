//! The web dashboard at `/ui`: plain HTML, CSS and JavaScript compiled into
//! the binary (no build step, nothing read from disk at run time).
//!
//! The files hold no data, so they are served without a key; the page asks
//! for an API key, keeps it in the tab's `sessionStorage` only, and gets
//! everything from the authenticated API with `Authorization: Bearer`.
//! Every answer carries a strict Content-Security-Policy (scripts and styles
//! from these files only, requests to this origin only, no framing), so even
//! markup that slipped into the page could not run or send anything; the
//! scripts also only ever insert API data as text.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

/// Same origin for everything; `data:` images for the favicon only.
const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// `name => content type`: each file of `assets/`, compiled in.
macro_rules! assets {
    ($($name:literal => $content_type:expr),* $(,)?) => {
        &[$(Asset { name: $name, content_type: $content_type, body: include_bytes!(concat!("assets/", $name)) }),*]
    };
}

const ASSETS: &[Asset] = assets![
    "index.html" => HTML,
    "style.css" => CSS,
    "api.js" => JS,
    "sse.js" => JS,
    "dom.js" => JS,
    "store.js" => JS,
    "actions.js" => JS,
    "list.js" => JS,
    "create.js" => JS,
    "vm.js" => JS,
    "app.js" => JS,
];

/// The page itself (`index.html`, the first file).
const INDEX: &Asset = &ASSETS[0];

/// `/ui`, `/ui/` (the page) and `/ui/<file>`, all without a key.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(asset))
}

async fn index() -> Response {
    serve(INDEX, StatusCode::OK)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(found) => serve(found, StatusCode::OK),
        None => serve(
            &Asset {
                name: "",
                content_type: "text/plain; charset=utf-8",
                body: b"no such file in the dashboard\n",
            },
            StatusCode::NOT_FOUND,
        ),
    }
}

fn serve(asset: &Asset, status: StatusCode) -> Response {
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
        (
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
        ),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ),
        // A new binary may bring new files: always ask (they are small).
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (status, headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(asset: &Asset) -> &'static str {
        std::str::from_utf8(asset.body).unwrap()
    }

    #[test]
    fn every_file_the_page_loads_is_served() {
        let served = |name: &str| ASSETS.iter().any(|a| a.name == name);
        for name in text(INDEX)
            .split("\"/ui/")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
        {
            assert!(served(name), "index.html loads /ui/{name}, which is not served");
        }
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for name in text(asset)
                .split("from './")
                .skip(1)
                .filter_map(|rest| rest.split('\'').next())
            {
                assert!(served(name), "{} imports {name}, which is not served", asset.name);
            }
        }
        // No inline script or style: the Content-Security-Policy refuses them.
        let page = text(INDEX);
        assert!(
            !page.contains("<script>") && !page.contains(" style="),
            "inline code in index.html"
        );
    }

    #[test]
    fn scripts_never_parse_api_data_as_html() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = text(asset);
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!text.contains(sink), "{} uses {sink}", asset.name);
            }
        }
    }
}
