//! The transport rule, in one place: https anywhere, plain http only to loopback.
//!
//! Whatever the bridge sends carries a secret of some kind (a routing key, a webhook token, an
//! admin token) or decides what reaches an on-call human, so it never crosses a network in
//! clear text. Plain http stays possible to `127.0.0.0/8`, `::1` and `localhost`, where nothing
//! leaves the machine: that is how tests and demos reach the simulator.
//!
//! The rule is a type, not a check: an [`EndpointUrl`] cannot hold a URL that breaks it, and a
//! [`BaseUrl`] is an endpoint under which paths are joined (so it has no query or fragment).
//! Neither holds credentials (`user:password@`): a URL is shown in logs and errors, so a secret
//! belongs in a token file, not in it.

use std::fmt;
use std::net::IpAddr;

use url::Url;

/// Why a URL was refused. The URL itself is not repeated: it could carry a secret in its path
/// or query; the caller names the setting it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a URL: {0}")]
    Invalid(#[from] url::ParseError),
    #[error(
        "plain http is only allowed to a loopback address (127.0.0.0/8, ::1, localhost); use https"
    )]
    PlainHttp,
    #[error("the scheme must be https, not {0}")]
    Scheme(String),
    #[error("a URL must not hold credentials (user:password@); use a token file")]
    Credentials,
    #[error("a base URL takes no query or fragment")]
    QueryOrFragment,
}

/// A URL obeying the transport rule: https, or plain http to a loopback address; no
/// credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointUrl(Url);

impl EndpointUrl {
    /// Parses `raw` (surrounding whitespace ignored) and applies the rule.
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        let url = Url::parse(raw.trim())?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        match url.scheme() {
            "https" => Ok(Self(url)),
            "http" if is_loopback(&url) => Ok(Self(url)),
            "http" => Err(UrlError::PlainHttp),
            other => Err(UrlError::Scheme(other.to_owned())),
        }
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Scheme, host and port only (`https://hooks.example.com`), for logs: many webhook
    /// services put a token in the path or the query, and a log line must not carry it.
    pub fn origin(&self) -> String {
        self.0.origin().ascii_serialization()
    }
}

impl fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<EndpointUrl> for Url {
    fn from(url: EndpointUrl) -> Self {
        url.0
    }
}

/// An [`EndpointUrl`] that other paths go under, such as `https://events.pagerduty.com` or a
/// bridge's `http://127.0.0.1:9095`: no query and no fragment, which joining would lose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl(EndpointUrl);

impl BaseUrl {
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        let endpoint = EndpointUrl::parse(raw)?;
        if endpoint.0.query().is_some() || endpoint.0.fragment().is_some() {
            return Err(UrlError::QueryOrFragment);
        }
        Ok(Self(endpoint))
    }

    /// `path` (which starts with `/`) under the base path, whether or not the base ends in
    /// `/`: `https://h/pd` and `/v2/enqueue` give `https://h/pd/v2/enqueue`. A query in `path`
    /// (after `?`) becomes the URL's query.
    pub fn join(&self, path: &str) -> Url {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let mut url = self.0.0.clone();
        let joined = format!("{}{path}", url.path().trim_end_matches('/'));
        url.set_path(&joined);
        url.set_query(query);
        url
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether the URL's host is a loopback address (127.0.0.0/8, ::1) or `localhost`.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_allowed_anywhere() {
        for ok in [
            "https://events.pagerduty.com",
            "https://10.0.0.1:8443/hook?token=x",
            "  https://hooks.example.com/x  ",
        ] {
            assert!(EndpointUrl::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:8787",
            "http://127.9.9.9",
            "http://[::1]:1/x",
            "http://localhost:80",
            "http://LOCALHOST/",
        ] {
            assert!(EndpointUrl::parse(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://events.pagerduty.com",
            "http://10.0.0.1",
            "http://128.0.0.1",
            "http://localhost.evil.example",
            "http://[::ffff:10.0.0.1]",
        ] {
            assert_eq!(
                EndpointUrl::parse(refused),
                Err(UrlError::PlainHttp),
                "{refused}"
            );
        }
        let text = UrlError::PlainHttp.to_string();
        assert!(text.contains("127.0.0.0/8, ::1, localhost"), "{text}");
        assert!(text.ends_with("use https"), "{text}");
    }

    #[test]
    fn other_schemes_credentials_and_garbage_are_refused() {
        assert_eq!(
            EndpointUrl::parse("ftp://127.0.0.1/x"),
            Err(UrlError::Scheme("ftp".to_owned()))
        );
        assert!(matches!(
            EndpointUrl::parse("not a url"),
            Err(UrlError::Invalid(_))
        ));
        for with_credentials in [
            "https://user:pw@events.pagerduty.com",
            "https://user@events.pagerduty.com",
            "http://:pw@127.0.0.1",
        ] {
            assert_eq!(
                EndpointUrl::parse(with_credentials),
                Err(UrlError::Credentials),
                "{with_credentials}"
            );
        }
    }

    #[test]
    fn errors_do_not_repeat_the_url() {
        let error = EndpointUrl::parse("https://user:s3cret@example.com").expect_err("refused");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn a_base_takes_no_query_or_fragment() {
        for refused in ["https://h.example/x?a=1", "https://h.example/#top"] {
            assert_eq!(
                BaseUrl::parse(refused),
                Err(UrlError::QueryOrFragment),
                "{refused}"
            );
        }
        assert_eq!(
            BaseUrl::parse("http://10.0.0.1"),
            Err(UrlError::PlainHttp),
            "the transport rule applies to bases too"
        );
    }

    #[test]
    fn paths_join_under_the_base_path() {
        let base = BaseUrl::parse("https://events.eu.pagerduty.com/").expect("url");
        assert_eq!(
            base.join("/v2/enqueue").as_str(),
            "https://events.eu.pagerduty.com/v2/enqueue"
        );
        let prefixed = BaseUrl::parse("http://127.0.0.1:9/pd").expect("url");
        assert_eq!(
            prefixed.join("/v2/change/enqueue").as_str(),
            "http://127.0.0.1:9/pd/v2/change/enqueue"
        );
        assert_eq!(
            prefixed.join("/api/v2/alerts?active=false").as_str(),
            "http://127.0.0.1:9/pd/api/v2/alerts?active=false"
        );
    }

    #[test]
    fn the_origin_for_logs_drops_path_and_query() {
        let url =
            EndpointUrl::parse("https://hooks.example.com:8443/T000/B000/secret-token?key=abc")
                .expect("an https URL");
        assert_eq!(url.origin(), "https://hooks.example.com:8443");
    }
}
