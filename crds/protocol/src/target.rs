//! Where a probe goes, read from its assignment: one parser for both sides. The agent builds
//! its probes from a [`Destination`]; the operator parses every resolved target the same way
//! before assigning it ([`check_assignment`]), because an agent refuses a whole assignment it
//! cannot read, and one tenant's target must never stop other checks.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderValue, Method, Uri};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::guard::normalise_ip;
use crate::spec::{
    Assignment, DnsSpec, HttpSpec, IcmpSpec, ProbeSpec, SpecError, TargetSpec, TcpSpec, UdpSpec,
};

/// `host:port` where host is an IP literal (`[v6]:port` for IPv6) or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPort {
    Addr(SocketAddr),
    Name(String, u16),
}

impl HostPort {
    pub fn parse(s: &str, field: &str) -> Result<HostPort, SpecError> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(HostPort::Addr(a));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| SpecError::invalid(field, format!("{s:?} is not host:port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| SpecError::invalid(field, format!("{s:?} has an invalid port")))?;
        // `0x7f.1`, `2852039166`, `[fe80::1%eth0]`: the system resolver would read these as
        // addresses, so they are addresses here too, judged as what they reach.
        if let Some(ip) = normalise_ip(host)
            && port != 0
        {
            return Ok(HostPort::Addr(SocketAddr::new(ip, port)));
        }
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid || port == 0 {
            return Err(SpecError::invalid(field, format!("{s:?} is not host:port")));
        }
        Ok(HostPort::Name(host.to_owned(), port))
    }
}

/// Where one HTTP request goes: the first URL, or a redirect's `Location`.
#[derive(Debug, Clone)]
pub struct Hop {
    pub https: bool,
    pub host: HostPort,
    /// Host header value.
    pub authority: HeaderValue,
    pub path: Uri,
    pub server_name: ServerName<'static>,
}

impl Hop {
    /// Reads a URL; `server_name` and `host_header` override what the URL implies.
    pub fn from_uri(
        uri: &Uri,
        server_name: Option<&str>,
        host_header: Option<&str>,
        field: &str,
    ) -> Result<Hop, SpecError> {
        let bad = |m: &str| SpecError::invalid(field, format!("{uri}: {m}"));
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("scheme must be http or https")),
        };
        let auth = uri.authority().ok_or_else(|| bad("no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad("credentials in URLs are not supported"));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        // A port that is there must be one: `:65536` or `:0` is refused, never replaced by the
        // scheme's default.
        let port = match explicit_port(auth.as_str()) {
            Ok(Some(port)) => port,
            Ok(None) if https => 443,
            Ok(None) => 80,
            Err(()) => return Err(bad("the port must be 1 to 65535")),
        };
        // Every spelling of an address (`0x7f.1`, `2852039166`, `[::ffff:7f00:1]`) is that
        // address, so it is checked as one rather than handed to getaddrinfo as a name.
        let ip = normalise_ip(auth.host());
        let hp = match ip {
            Some(ip) => HostPort::Addr((ip, port).into()),
            None => HostPort::parse(&format!("{host}:{port}"), field)?,
        };
        let path: Uri = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|_| bad("invalid path"))?;
        let sni = match (server_name, ip) {
            (Some(name), _) => name.to_owned(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => host.to_owned(),
        };
        let server_name = ServerName::try_from(sni).map_err(|_| bad("invalid TLS server name"))?;
        let authority = HeaderValue::from_str(host_header.unwrap_or(auth.as_str()))
            .map_err(|_| bad("invalid Host header"))?;
        Ok(Hop {
            https,
            host: hp,
            authority,
            path,
            server_name,
        })
    }
}

/// The port written in a URL authority (`host:port`, `[v6]:port`), if any; `Err` when it is
/// not a number from 1 to 65535 (the `http` crate reads an out-of-range port as none).
fn explicit_port(authority: &str) -> Result<Option<u16>, ()> {
    let after_host = match authority.rfind(']') {
        Some(end) => &authority[end + 1..],
        None => authority,
    };
    let Some((_, port)) = after_host.rsplit_once(':') else {
        return Ok(None);
    };
    // An empty port is the scheme's default, as URL parsers read it.
    if port.is_empty() {
        return Ok(None);
    }
    if port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(()),
        Ok(port) => Ok(Some(port)),
    }
}

/// An HTTP(S) target: its first hop, the method, and the CA certificates to trust instead of
/// the system's (each one a usable trust anchor).
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub first: Hop,
    pub method: Method,
    pub ca_certificates: Option<Vec<CertificateDer<'static>>>,
}

impl HttpTarget {
    pub fn parse(url: &str, spec: &HttpSpec, field: &str) -> Result<HttpTarget, SpecError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| SpecError::invalid(field, format!("{url:?} is not a URL")))?;
        let first = Hop::from_uri(
            &uri,
            spec.server_name.as_deref(),
            spec.host.as_deref(),
            field,
        )?;
        let method = match &spec.method {
            Some(m) => Method::from_bytes(m.as_bytes())
                .map_err(|_| SpecError::invalid(field, format!("invalid method {m:?}")))?,
            None => Method::GET,
        };
        let ca_certificates = spec
            .ca_bundle
            .as_deref()
            .map(parse_ca_bundle)
            .transpose()
            .map_err(|m| SpecError::invalid(format!("{field}: caBundle"), m))?;
        Ok(HttpTarget {
            first,
            method,
            ca_certificates,
        })
    }
}

/// The certificates of a PEM bundle, each checked to be a usable trust anchor (what a TLS
/// client's root store accepts).
pub fn parse_ca_bundle(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certificates = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("unreadable PEM: {e}"))?;
        webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| format!("unusable CA certificate: {e}"))?;
        certificates.push(cert);
    }
    if certificates.is_empty() {
        return Err("no certificate in the bundle".into());
    }
    Ok(certificates)
}

/// A DNS target: the name queried (fully qualified) and the server asked, when the check
/// names one (else the agent's own resolver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTarget {
    pub fqdn: String,
    pub server: Option<SocketAddr>,
}

impl DnsTarget {
    pub fn parse(name: &str, spec: &DnsSpec, field: &str) -> Result<DnsTarget, SpecError> {
        let relative = name.strip_suffix('.').unwrap_or(name);
        if !is_dns_name(relative) {
            return Err(SpecError::invalid(
                field,
                format!(
                    "{name:?} is not a DNS name (labels of 1 to 63 letters, digits, '-' or '_', \
                     253 bytes in all)"
                ),
            ));
        }
        let server = spec
            .server
            .as_deref()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        SpecError::invalid(field, format!("server {s:?} is not ip or ip:port"))
                    })
            })
            .transpose()?;
        Ok(DnsTarget {
            fqdn: format!("{relative}."),
            server,
        })
    }
}

/// A name as DNS carries it: at most 253 bytes, labels of 1 to 63 letters, digits, `-` or
/// `_` (SRV and DKIM names have underscores), or a lone `*`.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            label == "*"
                || (!label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        })
}

/// One target of a check as its probe reads it, with the probe's settings.
#[derive(Debug, Clone)]
pub enum Destination<'a> {
    Tcp(HostPort, &'a TcpSpec),
    Udp(HostPort, &'a UdpSpec),
    Http(Box<HttpTarget>, &'a HttpSpec),
    Dns(DnsTarget, &'a DnsSpec),
    Icmp(IpAddr, &'a IcmpSpec),
}

impl<'a> Destination<'a> {
    /// Reads `target` as `probe` needs it; errors name `field`.
    pub fn parse(
        probe: &'a ProbeSpec,
        target: &TargetSpec,
        field: &str,
    ) -> Result<Destination<'a>, SpecError> {
        let addr = &target.address;
        Ok(match probe {
            ProbeSpec::Tcp(s) => Destination::Tcp(HostPort::parse(addr, field)?, s),
            ProbeSpec::Udp(s) => Destination::Udp(HostPort::parse(addr, field)?, s),
            ProbeSpec::Http(s) => {
                Destination::Http(Box::new(HttpTarget::parse(addr, s, field)?), s)
            }
            ProbeSpec::Dns(s) => Destination::Dns(DnsTarget::parse(addr, s, field)?, s),
            // Every spelling inet_aton accepts, canonical: the address judged is the address
            // pinged.
            ProbeSpec::Icmp(s) => {
                let ip = normalise_ip(addr).ok_or_else(|| {
                    SpecError::invalid(field, format!("{addr:?} is not an IP address"))
                })?;
                Destination::Icmp(ip, s)
            }
        })
    }
}

/// The field of target `j` of check `i`, as errors name it.
pub fn target_field(check: usize, target: usize) -> String {
    format!("checks[{check}].targets[{target}].address")
}

/// Whether an agent can read every part of `assignment`: the document's own rules
/// ([`Assignment::validate`]) and every target as its probe needs it.
pub fn check_assignment(assignment: &Assignment) -> Result<(), SpecError> {
    assignment.validate()?;
    for (i, check) in assignment.checks.iter().enumerate() {
        for (j, target) in check.targets.iter().enumerate() {
            Destination::parse(&check.probe, target, &target_field(i, j))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            HostPort::parse("10.0.0.1:80", "f").unwrap(),
            HostPort::Addr("10.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            HostPort::parse("[::1]:53", "f").unwrap(),
            HostPort::Addr("[::1]:53".parse().unwrap())
        );
        assert_eq!(
            HostPort::parse("web.default.svc.cluster.local.:8080", "f").unwrap(),
            HostPort::Name("web.default.svc.cluster.local.".into(), 8080)
        );
        for bad in [
            "",
            "nohost",
            "a:b",
            "a:0",
            ":80",
            "a b:80",
            "::1:80x",
            "x:70000",
            "127.1:0",
            "[::ffff:127.1]:80",
        ] {
            assert!(HostPort::parse(bad, "f").is_err(), "{bad}");
        }
        // Other spellings of addresses are addresses, never names for getaddrinfo to read.
        for (text, want) in [
            ("0x7f.1:80", "127.0.0.1:80"),
            ("2852039166:80", "169.254.169.254:80"),
            ("0251.0376.0251.0376:80", "169.254.169.254:80"),
            ("169.254.169.254.:80", "169.254.169.254:80"),
            ("[fe80::1%eth0]:80", "[fe80::1]:80"),
        ] {
            assert_eq!(
                HostPort::parse(text, "f").unwrap(),
                HostPort::Addr(want.parse().unwrap()),
                "{text}"
            );
        }
    }

    #[test]
    fn url_ports_are_explicit_or_the_scheme_default() {
        assert_eq!(explicit_port("h:"), Ok(None));
        assert_eq!(explicit_port("h:x"), Err(()));
        assert_eq!(explicit_port("h"), Ok(None));
        assert_eq!(explicit_port("[::1]:81"), Ok(Some(81)));
        assert_eq!(explicit_port("h:65536"), Err(()));
        assert_eq!(explicit_port("h:0"), Err(()));
    }

    #[test]
    fn dns_names() {
        let spec: DnsSpec = serde_json::from_str("{}").unwrap();
        let t = DnsTarget::parse("_http._tcp.web.default.svc", &spec, "f").unwrap();
        assert_eq!(t.fqdn, "_http._tcp.web.default.svc.");
        assert_eq!(t.server, None);
        assert_eq!(
            DnsTarget::parse("example.com.", &spec, "f").unwrap().fqdn,
            "example.com."
        );
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = ["abcdefghi"; 26].join(".");
        for bad in [
            "",
            ".",
            "a..b",
            "sp ace.com",
            "bücher.de",
            "back\\slash",
            &long_label,
            &long_name,
        ] {
            let e = DnsTarget::parse(bad, &spec, "checks[0].targets[1].address").unwrap_err();
            assert!(
                e.to_string().contains("checks[0].targets[1].address"),
                "{bad}: {e}"
            );
        }
        let with_server: DnsSpec = serde_json::from_str(r#"{"server":"10.96.0.10"}"#).unwrap();
        assert_eq!(
            DnsTarget::parse("a.b", &with_server, "f").unwrap().server,
            Some("10.96.0.10:53".parse().unwrap())
        );
        let bad_server: DnsSpec = serde_json::from_str(r#"{"server":"dns.local"}"#).unwrap();
        assert!(DnsTarget::parse("a.b", &bad_server, "f").is_err());
    }

    #[test]
    fn ca_bundles_must_hold_usable_certificates() {
        assert_eq!(
            parse_ca_bundle("").unwrap_err(),
            "no certificate in the bundle"
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(
            parse_ca_bundle(garbage)
                .unwrap_err()
                .contains("unusable CA certificate"),
        );
    }

    #[test]
    fn parses_urls() {
        let spec = HttpSpec::default();
        let p = HttpTarget::parse("https://10.0.0.1:8443/healthz?x=1", &spec, "t").unwrap();
        assert!(p.first.https);
        assert_eq!(
            p.first.host,
            HostPort::Addr("10.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(p.first.path, "/healthz?x=1");
        assert_eq!(p.first.authority, "10.0.0.1:8443");
        let p = HttpTarget::parse("http://web.default.svc.", &spec, "t").unwrap();
        assert_eq!(p.first.host, HostPort::Name("web.default.svc.".into(), 80));
        assert_eq!(p.first.path, "/");
        let p = HttpTarget::parse("http://[::1]:81/", &spec, "t").unwrap();
        assert_eq!(p.first.host, HostPort::Addr("[::1]:81".parse().unwrap()));
        let custom = HttpSpec {
            host: Some("example.test".into()),
            server_name: Some("sni.test".into()),
            ..spec.clone()
        };
        let p = HttpTarget::parse("https://10.0.0.1/", &custom, "t").unwrap();
        assert_eq!(p.first.authority, "example.test");
        assert_eq!(
            p.first.server_name,
            ServerName::try_from("sni.test").unwrap()
        );
        // Other spellings of addresses: connected to (and checked) as the address; the Host
        // header keeps the URL's text, the TLS server name is the address.
        let p = HttpTarget::parse("https://0x7f.1:8443/", &spec, "t").unwrap();
        assert_eq!(
            p.first.host,
            HostPort::Addr("127.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(p.first.authority, "0x7f.1:8443");
        assert_eq!(
            p.first.server_name,
            ServerName::try_from("127.0.0.1").unwrap()
        );
        let p = HttpTarget::parse("http://[::ffff:a9fe:a9fe]/", &spec, "t").unwrap();
        assert_eq!(
            p.first.host,
            HostPort::Addr("169.254.169.254:80".parse().unwrap())
        );
        for bad in ["ftp://x/", "10.0.0.1:80", "http://user:pw@x/", "not a url"] {
            assert!(HttpTarget::parse(bad, &spec, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_ca_bundle_is_a_config_error() {
        let spec = HttpSpec {
            ca_bundle: Some("garbage".into()),
            ..HttpSpec::default()
        };
        let e = HttpTarget::parse("https://x.test/", &spec, "t").unwrap_err();
        assert!(e.to_string().contains("caBundle"), "{e}");
    }

    #[test]
    fn ports_out_of_range_are_refused_not_defaulted() {
        let new = |url: &str| HttpTarget::parse(url, &HttpSpec::default(), "t");
        for bad in [
            "https://example.com:65536/",
            "http://example.com:0/",
            "http://example.com:99999/",
            "http://[2001:db8::1]:70000/",
        ] {
            let e = new(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("the port must be 1 to 65535"), "{bad}: {e}");
        }
        let p = new("https://example.com:65535/").unwrap();
        assert_eq!(p.first.host, HostPort::Name("example.com".into(), 65535));
        let p = new("http://[2001:db8::1]/").unwrap();
        assert_eq!(
            p.first.host,
            HostPort::Addr("[2001:db8::1]:80".parse().unwrap())
        );
    }
}
