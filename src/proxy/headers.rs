//! Header rewriting between client and upstream: hop-by-hop headers are
//! connection-specific and never forwarded (RFC 9110 §7.6.1), except the
//! `Connection: upgrade` / `Upgrade` pair of a protocol upgrade; forwarding
//! headers tell the guest who the client was.
//!
//! The rules work on [`Fields`], a head's fields as bytes, so that they
//! hold alike for heads the proxy read itself (passed on as they came,
//! without building a header map) and for hyper's header maps.

use std::net::IpAddr;

use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, UPGRADE};

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A head's header fields, name and value as bytes, in the order they came.
pub(crate) trait Fields {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    /// The values of the fields named `name` (lowercase).
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.each()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }
}

impl Fields for HeaderMap {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
    }
}

/// Which of the headers the proxy acts on a head holds, noted in one pass
/// over its names. Most requests and answers hold none of them, and one
/// look at each name present costs less than a lookup for each header the
/// proxy might act on (a dozen per request). `false` is certain; `true`
/// means the header was there when its name was noted.
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
    pub date: bool,
    pub strict_transport_security: bool,
}

impl Present {
    pub(crate) fn of(fields: &(impl Fields + ?Sized)) -> Self {
        let mut present = Self::default();
        for (name, _) in fields.each() {
            present.note(name);
        }
        present
    }

    /// Notes `name`, in any case. Sorted by length first: most names are
    /// none of these, and that costs one comparison.
    pub(crate) fn note(&mut self, name: &[u8]) {
        let is = |noted: &str| name.eq_ignore_ascii_case(noted.as_bytes());
        match name.len() {
            2 if is("te") => self.hop_by_hop = true,
            4 if is("date") => self.date = true,
            6 if is("expect") => self.expect = true,
            7 if is("upgrade") => {
                self.upgrade = true;
                self.hop_by_hop = true;
            }
            7 if is("trailer") => self.hop_by_hop = true,
            10 if is("connection") => {
                self.connection = true;
                self.hop_by_hop = true;
            }
            10 if is("keep-alive") => self.hop_by_hop = true,
            14 if is("content-length") => self.content_length = true,
            15 if is("x-forwarded-for") => self.forwarding = true,
            16 if is("x-forwarded-host") => self.forwarding = true,
            16 if is("proxy-connection") => self.hop_by_hop = true,
            17 if is("transfer-encoding") => {
                self.transfer_encoding = true;
                self.hop_by_hop = true;
            }
            17 if is("x-forwarded-proto") => self.forwarding = true,
            18 if is("proxy-authenticate") => self.hop_by_hop = true,
            19 if is("proxy-authorization") => self.hop_by_hop = true,
            25 if is("strict-transport-security") => self.strict_transport_security = true,
            _ => {}
        }
    }

    /// Whether the request asks to switch protocols (`Connection: upgrade`
    /// plus an `Upgrade` header), as WebSockets do.
    pub(crate) fn wants_upgrade(self, fields: &(impl Fields + ?Sized)) -> bool {
        self.upgrade && self.connection && has_connection_token(fields, "upgrade")
    }

    /// Whether the `Connection` header says `close`.
    pub(crate) fn says_close(self, fields: &(impl Fields + ?Sized)) -> bool {
        self.connection && has_connection_token(fields, "close")
    }
}

/// The options of the `Connection` fields, trimmed, empty ones left out.
pub(crate) fn connection_tokens(fields: &(impl Fields + ?Sized)) -> impl Iterator<Item = &[u8]> {
    fields
        .values("connection")
        .flat_map(|value| value.split(|byte| *byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

fn has_connection_token(fields: &(impl Fields + ?Sized), token: &str) -> bool {
    connection_tokens(fields).any(|found| found.eq_ignore_ascii_case(token.as_bytes()))
}

/// Which fields of a head stop at the proxy: the hop-by-hop ones and those
/// its `Connection` header names (never `Host`: a client must not be able
/// to make the proxy drop it).
pub(crate) struct HopByHop<'a> {
    any: bool,
    named: Vec<&'a [u8]>,
}

impl<'a> HopByHop<'a> {
    /// `present`: what [`Present::of`] noted of `fields`.
    pub(crate) fn of(fields: &'a (impl Fields + ?Sized), present: Present) -> Self {
        // Hop-by-hop names are stopped anyway: the usual `Connection:
        // keep-alive` then costs no list (no allocation per request).
        let named = if present.connection {
            connection_tokens(fields)
                .filter(|token| !token.eq_ignore_ascii_case(b"host") && !is_hop_by_hop(token))
                .collect()
        } else {
            Vec::new()
        };
        Self {
            any: present.hop_by_hop,
            named,
        }
    }

    pub(crate) fn stops(&self, name: &[u8]) -> bool {
        self.any && (is_hop_by_hop(name) || self.named.iter().any(|named| name.eq_ignore_ascii_case(named)))
    }
}

/// One list of hop-by-hop names, [`Present::note`]'s.
fn is_hop_by_hop(name: &[u8]) -> bool {
    let mut present = Present::default();
    present.note(name);
    present.hop_by_hop
}

/// Removes the fields [`HopByHop`] stops from a map; keeps the upgrade
/// pair when `keep_upgrade`. `present`: what [`Present::of`] noted of
/// `headers`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool, present: Present) {
    if !present.hop_by_hop {
        return;
    }
    let upgrade = if keep_upgrade {
        headers.get(UPGRADE).cloned()
    } else {
        None
    };
    let hop_by_hop = HopByHop::of(headers, present);
    let stopped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| hop_by_hop.stops(name.as_str().as_bytes()))
        .cloned()
        .collect();
    drop(hop_by_hop);
    for name in stopped {
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

/// The forwarding headers a request gets on its way to the guest: the
/// client appended to `X-Forwarded-For`, `X-Forwarded-Proto` and
/// `X-Forwarded-Host` set (unless a trusted proxy in front already did).
/// Each replaces what the client sent under its name, and all go after the
/// client's own headers.
#[derive(Debug, Default)]
pub(crate) struct Forwarded {
    fields: [Option<(HeaderName, HeaderValue)>; 3],
    /// Whether the client sent any of them itself.
    client_sent: bool,
}

impl Forwarded {
    /// `present`: what [`Present::of`] noted of `fields`.
    pub(crate) fn of(fields: &(impl Fields + ?Sized), forwarding: &Forwarding<'_>, present: Present) -> Self {
        let proto = HeaderValue::from_static(forwarding.proto);
        if !present.forwarding {
            return Self {
                fields: [
                    Some((X_FORWARDED_FOR, forwarding.client.clone())),
                    Some((X_FORWARDED_PROTO, proto)),
                    Some((X_FORWARDED_HOST, forwarding.host.clone())),
                ],
                client_sent: false,
            };
        }
        let mut chain = Vec::new();
        for previous in fields.values(X_FORWARDED_FOR.as_str()).map(<[u8]>::trim_ascii) {
            if !previous.is_empty() {
                chain.extend_from_slice(previous);
                chain.extend_from_slice(b", ");
            }
        }
        chain.extend_from_slice(forwarding.client.as_bytes());
        // A chain that is no valid value leaves the client's as it was.
        let forwarded_for = HeaderValue::from_bytes(&chain).ok();
        let unless_trusted = |name: &HeaderName, value: HeaderValue| {
            let trusted = forwarding.trust_incoming && fields.values(name.as_str()).next().is_some();
            (!trusted).then_some((name.clone(), value))
        };
        Self {
            fields: [
                forwarded_for.map(|value| (X_FORWARDED_FOR, value)),
                unless_trusted(&X_FORWARDED_PROTO, proto),
                unless_trusted(&X_FORWARDED_HOST, forwarding.host.clone()),
            ],
            client_sent: true,
        }
    }

    pub(crate) fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.fields.iter().flatten().map(|(name, value)| (name, value))
    }

    /// Whether the client's fields named `name` give way to these.
    pub(crate) fn replaces(&self, name: &[u8]) -> bool {
        self.client_sent
            && self
                .fields()
                .any(|(forwarded, _)| name.eq_ignore_ascii_case(forwarded.as_str().as_bytes()))
    }

    /// Puts them into the map in place of the client's (for a request that
    /// goes out through hyper's client, which writes only the map), with
    /// `host` as its `Host`.
    pub(crate) fn insert_into(self, headers: &mut HeaderMap, host: &HeaderValue) {
        headers.insert(HOST, host.clone());
        for (name, value) in self.fields.into_iter().flatten() {
            headers.insert(name, value);
        }
    }
}

/// The client's fields that go on to the guest, in the order they came:
/// all but those stopped at the proxy, `Host` (written from the route) and
/// those the `forwarded` headers replace.
pub(crate) fn onward<'a>(
    fields: &'a (impl Fields + ?Sized),
    hop_by_hop: &'a HopByHop<'_>,
    forwarded: &'a Forwarded,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    fields.each().filter(move |(name, _)| {
        !name.eq_ignore_ascii_case(b"host") && !hop_by_hop.stops(name) && !forwarded.replaces(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hop-by-hop names (RFC 9110 §7.6.1, plus the `Keep-Alive` and
    /// `Proxy-Connection` of older clients).
    const HOP_BY_HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];

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

    /// What the guest gets of a request with the fields of `map` (a raw
    /// head's or a header map): the client's
    /// that go on, then `Host` and the forwarding headers.
    fn sent_on(map: &impl Fields, forwarding: &Forwarding<'_>) -> Vec<(String, String)> {
        let present = Present::of(map);
        let hop_by_hop = HopByHop::of(map, present);
        let forwarded = Forwarded::of(map, forwarding, present);
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
        let mut sent: Vec<(String, String)> = onward(map, &hop_by_hop, &forwarded)
            .map(|(name, value)| (text(name), text(value)))
            .collect();
        sent.push(("host".into(), text(forwarding.host.as_bytes())));
        sent.extend(
            forwarded
                .fields()
                .map(|(name, value)| (name.to_string(), text(value.as_bytes()))),
        );
        sent
    }

    /// A client at `client_ip` asking for `host`.
    struct Asking {
        client: HeaderValue,
        host: HeaderValue,
    }

    impl Asking {
        fn new(client_ip: &str, host: &'static str) -> Self {
            Self {
                client: client_value(client_ip.parse().unwrap()),
                host: HeaderValue::from_static(host),
            }
        }

        fn forwarding(&self, proto: &'static str, trust_incoming: bool) -> Forwarding<'_> {
            Forwarding {
                client: &self.client,
                host: &self.host,
                proto,
                trust_incoming,
            }
        }
    }

    fn names(sent: &[(String, String)]) -> Vec<&str> {
        sent.iter().map(|(name, _)| name.as_str()).collect()
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
        let mut left: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
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
        let map = headers(&[
            ("x-forwarded-for", "10.1.1.1"),
            ("accept", "*/*"),
            ("X-Forwarded-For", "10.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed"),
            ("host", "app.example.test:9090"),
        ]);
        let asking = Asking::new("127.0.0.1", "app.example.test:9090");
        let forwarding = asking.forwarding("http", false);
        let sent = sent_on(&map, &forwarding);
        assert_eq!(
            sent,
            [
                ("accept", "*/*"),
                ("host", "app.example.test:9090"),
                ("x-forwarded-for", "10.1.1.1, 10.2.2.2, 127.0.0.1"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "app.example.test:9090"),
            ]
            .map(|(name, value)| (name.to_string(), value.to_string()))
        );

        let map = headers(&[("x-forwarded-proto", "https"), ("x-forwarded-host", "public.example")]);
        let trusting = Forwarding {
            trust_incoming: true,
            ..forwarding
        };
        // The trusted ones stay where they were; only the chain is new.
        let sent = sent_on(&map, &trusting);
        assert_eq!(
            names(&sent),
            ["x-forwarded-proto", "x-forwarded-host", "host", "x-forwarded-for"]
        );
        assert_eq!(sent[0].1, "https");
        assert_eq!(sent[1].1, "public.example");
        assert_eq!(sent[3].1, "127.0.0.1");
    }

    #[test]
    fn an_empty_forwarded_for_is_replaced_not_kept_beside_the_proxys() {
        let asking = Asking::new("10.0.0.9", "app.example.test");
        let forwarding = asking.forwarding("http", false);
        let sent = sent_on(&headers(&[("x-forwarded-for", " ")]), &forwarding);
        let chains: Vec<&str> = sent
            .iter()
            .filter(|(name, _)| name == "x-forwarded-for")
            .map(|(_, value)| value.as_str())
            .collect();
        assert_eq!(chains, ["10.0.0.9"]);
    }

    #[test]
    fn the_upgrade_path_map_gets_the_same_forwarding() {
        let asking = Asking::new("10.0.0.9", "app.example.test");
        let forwarding = asking.forwarding("https", false);
        let mut map = headers(&[
            ("host", "other"),
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-proto", "http"),
        ]);
        let forwarded = Forwarded::of(&map, &forwarding, Present::of(&map));
        forwarded.insert_into(&mut map, &asking.host);
        assert_eq!(map.get(HOST).unwrap(), "app.example.test");
        assert_eq!(map.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(map.get(&X_FORWARDED_FOR).unwrap(), "10.1.1.1, 10.0.0.9");
        assert_eq!(map.get(&X_FORWARDED_PROTO).unwrap(), "https");
        assert_eq!(map.get(&X_FORWARDED_HOST).unwrap(), "app.example.test");
    }

    #[test]
    fn notes_the_headers_the_proxy_acts_on() {
        let plain = headers(&[("host", "a.example.test"), ("accept", "*/*"), ("x-request-id", "1")]);
        assert_eq!(Present::of(&plain), Present::default());
        let noted = |name: &str| {
            let mut present = Present::default();
            present.note(name.as_bytes());
            present
        };
        assert!(noted("Connection").connection && noted("connection").hop_by_hop);
        assert!(noted("upgrade").upgrade && noted("upgrade").hop_by_hop);
        assert!(noted("Transfer-Encoding").transfer_encoding && noted("transfer-encoding").hop_by_hop);
        // Every hop-by-hop name is noted as one, and the rest are noted as
        // nothing else.
        for hop in HOP_BY_HOP {
            assert!(noted(hop).hop_by_hop, "{hop}");
        }
        for hop in [
            "keep-alive",
            "Proxy-Connection",
            "proxy-authenticate",
            "proxy-authorization",
            "TE",
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
        assert!(noted("DATE").date);
        assert!(noted("Strict-Transport-Security").strict_transport_security);
        assert_eq!(noted("x-strict-transport-security-policy"), Present::default());
    }

    #[test]
    fn a_request_without_forwarding_headers_gets_all_three_and_its_host() {
        let asking = Asking::new("10.0.0.9", "app.example.test");
        let forwarding = asking.forwarding("https", true);
        let map = headers(&[("Host", "other.example.test"), ("accept", "*/*")]);
        let sent = sent_on(&map, &forwarding);
        assert_eq!(
            sent,
            [
                ("accept", "*/*"),
                ("host", "app.example.test"),
                ("x-forwarded-for", "10.0.0.9"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "app.example.test"),
            ]
            .map(|(name, value)| (name.to_string(), value.to_string()))
        );
    }

    #[test]
    fn hop_by_hop_is_stopped_in_any_case_and_host_never() {
        let map = headers(&[
            ("connection", "X-Secret, host"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("a", "b"),
        ]);
        let present = Present::of(&map);
        let hop_by_hop = HopByHop::of(&map, present);
        for stopped in ["Connection", "KEEP-ALIVE", "x-SECRET", "Upgrade", "te"] {
            assert!(hop_by_hop.stops(stopped.as_bytes()), "{stopped}");
        }
        for passed in ["host", "Host", "a", "content-type"] {
            assert!(!hop_by_hop.stops(passed.as_bytes()), "{passed}");
        }
    }

    #[test]
    fn a_raw_head_and_its_header_map_pass_on_the_same_fields() {
        let heads = [
            "Host: a\r\nAccept: */*\r\n",
            "HOST: a\r\nConnection: Keep-Alive, X-Secret, host\r\nx-secret: 1\r\nX-Kept: 2\r\nKeep-Alive: 5\r\n",
            "Host: a\r\nX-Forwarded-For: 10.1.1.1\r\nx-forwarded-for: 10.2.2.2, 10.3.3.3\r\nX-Forwarded-Proto: https\r\n",
            "Host: a\r\nX-Forwarded-Host: b\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: x\r\nTrailer: y\r\n",
            "X-Forwarded-For:  \r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 0\r\n",
        ];
        let asking = Asking::new("10.0.0.9", "a");
        for fields in heads {
            let text = format!("HTTP/1.1 200 OK\r\n{fields}\r\n");
            let raw = crate::proxy::h1::parse_response(&mut bytes::BytesMut::from(text.as_str()), false)
                .unwrap()
                .unwrap()
                .fields;
            let map = raw.header_map(|_| true).unwrap();
            assert_eq!(Present::of(&raw), Present::of(&map), "{fields}");
            for trust_incoming in [false, true] {
                let forwarding = asking.forwarding("http", trust_incoming);
                let lowercase = |sent: Vec<(String, String)>| -> Vec<(String, String)> {
                    let mut sent: Vec<_> = sent
                        .into_iter()
                        .map(|(name, value)| (name.to_ascii_lowercase(), value))
                        .collect();
                    sent.sort();
                    sent
                };
                assert_eq!(
                    lowercase(sent_on(&raw, &forwarding)),
                    lowercase(sent_on(&map, &forwarding)),
                    "{fields}"
                );
            }
        }
    }
}
