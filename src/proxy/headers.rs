//! Header rewriting between client and upstream: hop-by-hop headers are
//! connection-specific and never forwarded (RFC 9110 §7.6.1), except the
//! `Connection: upgrade` / `Upgrade` pair of a protocol upgrade; forwarding
//! headers tell the guest who the client was.

use std::net::IpAddr;

use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

// Names, not strings: a `&str` key is parsed again on every lookup.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Which of the headers the proxy acts on a map holds, noted in one pass
/// over its names. Most requests and answers hold none of them, and one
/// look at each name present costs less than a hashed lookup for each
/// header the proxy might act on (a dozen per request). `false` is
/// certain; `true` means the header was there when its name was noted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Present {
    pub connection: bool,
    pub upgrade: bool,
    /// Any hop-by-hop header (`Connection` and `Upgrade` included).
    pub hop_by_hop: bool,
    pub content_length: bool,
    pub transfer_encoding: bool,
    /// Any `X-Forwarded-*` header the proxy writes itself.
    pub forwarding: bool,
    pub expect: bool,
}

impl Present {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut present = Self::default();
        for name in headers.keys() {
            present.note(name);
        }
        present
    }

    pub(crate) fn note(&mut self, name: &HeaderName) {
        match name.as_str() {
            "connection" => {
                self.connection = true;
                self.hop_by_hop = true;
            }
            "upgrade" => {
                self.upgrade = true;
                self.hop_by_hop = true;
            }
            "transfer-encoding" => {
                self.transfer_encoding = true;
                self.hop_by_hop = true;
            }
            "keep-alive" | "proxy-connection" | "proxy-authenticate" | "proxy-authorization" | "te" | "trailer" => {
                self.hop_by_hop = true;
            }
            "content-length" => self.content_length = true,
            "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" => self.forwarding = true,
            "expect" => self.expect = true,
            _ => {}
        }
    }

    /// Whether the request asks to switch protocols (`Connection: upgrade`
    /// plus an `Upgrade` header), as WebSockets do.
    pub(crate) fn wants_upgrade(self, headers: &HeaderMap) -> bool {
        self.upgrade && self.connection && connection_tokens(headers).any(|token| token.eq_ignore_ascii_case("upgrade"))
    }
}

pub(crate) fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Removes hop-by-hop headers, including those the `Connection` header
/// names; keeps the upgrade pair when `keep_upgrade`. `present`: what
/// [`Present::of`] noted of `headers`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool, present: Present) {
    if !present.hop_by_hop {
        return;
    }
    let upgrade = if keep_upgrade {
        headers.get(UPGRADE).cloned()
    } else {
        None
    };
    if present.connection {
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            // A client must not be able to make the proxy drop the Host header.
            .filter(|name| *name != HOST)
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, upgrade);
    }
}

/// How forwarding headers are written on the way to the guest.
#[derive(Debug, Clone)]
pub(crate) struct Forwarding<'a> {
    /// The client's address as a header value ([`client_value`]), made
    /// once per connection rather than formatted for every request.
    pub client: &'a HeaderValue,
    /// The original `Host` (with port, as the client sent it).
    pub host: &'a HeaderValue,
    /// `http`, or what a trusted TLS terminator in front said.
    pub proto: &'static str,
    /// Keep `X-Forwarded-Proto`/`-Host` sent by a trusted proxy in front.
    pub trust_incoming: bool,
}

/// A client address as it goes into `X-Forwarded-For`.
pub(crate) fn client_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The forwarding headers a request gets on its way to the guest, kept out
/// of its header map: written straight after the client's headers, they
/// cost the map no growth (one or two reallocations per request).
#[derive(Debug, Default)]
pub(crate) struct Forwarded {
    fields: [Option<(HeaderName, HeaderValue)>; 3],
}

impl Forwarded {
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.fields.iter().flatten().map(|(name, value)| (name, value))
    }

    /// Puts them into the map (for a request that goes out through hyper's
    /// client, which writes only the map).
    pub(crate) fn insert_into(self, headers: &mut HeaderMap) {
        for (name, value) in self.fields.into_iter().flatten() {
            headers.insert(name, value);
        }
    }
}

/// Appends the client to `X-Forwarded-For` and sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (unless a trusted proxy in front already did): what
/// the client sent of them leaves `headers`, what the guest gets instead is
/// returned. `Host` is set in `headers`. `present`: what [`Present::of`]
/// noted of `headers`.
pub(crate) fn take_forwarding(headers: &mut HeaderMap, forwarding: &Forwarding<'_>, present: Present) -> Forwarded {
    let host = || forwarding.host.clone();
    if !present.forwarding {
        set_host(headers, forwarding.host);
        return Forwarded {
            fields: [
                Some((X_FORWARDED_FOR, forwarding.client.clone())),
                Some((X_FORWARDED_PROTO, HeaderValue::from_static(forwarding.proto))),
                Some((X_FORWARDED_HOST, host())),
            ],
        };
    }
    let previous: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .collect();
    let forwarded_for = if previous.is_empty() {
        Some(forwarding.client.clone())
    } else {
        let client = String::from_utf8_lossy(forwarding.client.as_bytes());
        let chain = HeaderValue::try_from(format!("{}, {client}", previous.join(", "))).ok();
        if chain.is_some() {
            headers.remove(&X_FORWARDED_FOR);
        }
        chain
    };
    let mut replaced = |name: &HeaderName, value: HeaderValue| {
        if forwarding.trust_incoming && headers.contains_key(name) {
            return None;
        }
        headers.remove(name);
        Some(value)
    };
    let proto = replaced(&X_FORWARDED_PROTO, HeaderValue::from_static(forwarding.proto));
    let host = replaced(&X_FORWARDED_HOST, host());
    set_host(headers, forwarding.host);
    Forwarded {
        fields: [
            forwarded_for.map(|value| (X_FORWARDED_FOR, value)),
            proto.map(|value| (X_FORWARDED_PROTO, value)),
            host.map(|value| (X_FORWARDED_HOST, value)),
        ],
    }
}

fn set_host(headers: &mut HeaderMap, host: &HeaderValue) {
    // Usually the client's own Host already: replacing it would cost a
    // rehash and a drop for nothing.
    if headers.get(HOST) != Some(host) {
        headers.insert(HOST, host.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn strip(map: &mut HeaderMap, keep_upgrade: bool) {
        let present = Present::of(map);
        strip_hop_by_hop(map, keep_upgrade, present);
    }

    fn wants_upgrade(map: &HeaderMap) -> bool {
        Present::of(map).wants_upgrade(map)
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "websocket"),
            ("content-type", "text/plain"),
            ("host", "a.example.test"),
        ]);
        strip(&mut map, false);
        let left: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "host"]);
    }

    #[test]
    fn keeps_the_upgrade_pair_for_upgrades_only() {
        let mut map = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&map));
        strip(&mut map, true);
        assert_eq!(map.get(CONNECTION).unwrap(), "upgrade");
        assert_eq!(map.get(UPGRADE).unwrap(), "websocket");
        assert!(!wants_upgrade(&headers(&[("upgrade", "websocket")])));
        assert!(!wants_upgrade(&headers(&[("connection", "upgrade")])));
    }

    #[test]
    fn connection_header_cannot_remove_host() {
        let mut map = headers(&[("connection", "host"), ("host", "a.example.test")]);
        strip(&mut map, false);
        assert_eq!(map.get(HOST).unwrap(), "a.example.test");
    }

    #[test]
    fn appends_client_to_forwarded_for_and_sets_proto_and_host() {
        let host = HeaderValue::from_static("app.example.test:9090");
        let mut map = headers(&[
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-for", "10.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed"),
        ]);
        let client = client_value("127.0.0.1".parse().unwrap());
        let forwarding = Forwarding {
            client: &client,
            host: &host,
            proto: "http",
            trust_incoming: false,
        };
        let present = Present::of(&map);
        let forwarded = take_forwarding(&mut map, &forwarding, present);
        for spoofable in [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST] {
            assert!(
                map.get(spoofable).is_none(),
                "{spoofable} as the client sent it is gone"
            );
        }
        forwarded.insert_into(&mut map);
        assert_eq!(map.get(&X_FORWARDED_FOR).unwrap(), "10.1.1.1, 10.2.2.2, 127.0.0.1");
        assert_eq!(map.get(&X_FORWARDED_PROTO).unwrap(), "http");
        assert_eq!(map.get(&X_FORWARDED_HOST).unwrap(), "app.example.test:9090");
        assert_eq!(map.get(HOST).unwrap(), "app.example.test:9090");

        let mut map = headers(&[("x-forwarded-proto", "https"), ("x-forwarded-host", "public.example")]);
        let present = Present::of(&map);
        let forwarded = take_forwarding(
            &mut map,
            &Forwarding {
                trust_incoming: true,
                ..forwarding
            },
            present,
        );
        // The trusted ones stay where they were; only the chain is new.
        let added: Vec<&str> = forwarded.fields().map(|(name, _)| name.as_str()).collect();
        assert_eq!(added, ["x-forwarded-for"]);
        forwarded.insert_into(&mut map);
        assert_eq!(map.get(&X_FORWARDED_FOR).unwrap(), "127.0.0.1");
        assert_eq!(map.get(&X_FORWARDED_PROTO).unwrap(), "https");
        assert_eq!(map.get(&X_FORWARDED_HOST).unwrap(), "public.example");
    }

    #[test]
    fn notes_the_headers_the_proxy_acts_on() {
        let plain = headers(&[("host", "a.example.test"), ("accept", "*/*"), ("x-request-id", "1")]);
        assert_eq!(Present::of(&plain), Present::default());
        let noted = |name: &str| Present::of(&headers(&[(name, "1")]));
        assert!(noted("Connection").connection && noted("connection").hop_by_hop);
        assert!(noted("upgrade").upgrade && noted("upgrade").hop_by_hop);
        assert!(noted("transfer-encoding").transfer_encoding && noted("transfer-encoding").hop_by_hop);
        // Every name stripping removes is noted as hop-by-hop (the two
        // lists must not drift apart), and the rest are noted as nothing else.
        for hop in &HOP_BY_HOP {
            assert!(noted(hop.as_str()).hop_by_hop, "{hop}");
        }
        for hop in [
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
        ] {
            assert_eq!(
                noted(hop),
                Present {
                    hop_by_hop: true,
                    ..Present::default()
                },
                "{hop}"
            );
        }
        assert!(noted("content-length").content_length && !noted("content-length").hop_by_hop);
        for forwarding in ["x-forwarded-for", "X-Forwarded-Proto", "x-forwarded-host"] {
            assert!(noted(forwarding).forwarding, "{forwarding}");
        }
        assert!(noted("Expect").expect && !noted("expect").hop_by_hop);
    }

    #[test]
    fn a_request_without_forwarding_headers_gets_all_three_and_its_host() {
        let host = HeaderValue::from_static("app.example.test");
        let client = client_value("10.0.0.9".parse().unwrap());
        let forwarding = Forwarding {
            client: &client,
            host: &host,
            proto: "https",
            trust_incoming: true,
        };
        let mut map = headers(&[("host", "other.example.test"), ("accept", "*/*")]);
        let present = Present::of(&map);
        let forwarded = take_forwarding(&mut map, &forwarding, present);
        forwarded.insert_into(&mut map);
        assert_eq!(map.get(&X_FORWARDED_FOR).unwrap(), "10.0.0.9");
        assert_eq!(map.get(&X_FORWARDED_PROTO).unwrap(), "https");
        assert_eq!(map.get(&X_FORWARDED_HOST).unwrap(), "app.example.test");
        assert_eq!(map.get(HOST).unwrap(), "app.example.test");
    }
}
