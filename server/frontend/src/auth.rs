//! Bearer-token authentication, one token set per route class.
//!
//! Every route belongs to a [`RouteClass`], declared once in
//! [`ROUTE_CLASSES`]: health checks and `/metrics` are open (load balancers
//! and Prometheus must reach them without credentials), the Open Inference
//! Protocol is `Inference`, and the repository and admin APIs are
//! `Management`. A class with no token configured is open. The check runs in
//! the listener's per-request wrapper (see `listener::front`), before routing,
//! so it covers HTTP and gRPC alike and a route added later only has to
//! declare its class here.
//!
//! Tokens never reach a log: [`Token`]'s `Debug` is redacted, and no message
//! quotes a token or a token file's line. They are compared in constant time.

use std::ffi::OsString;
use std::fmt;
use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use subtle::{Choice, ConstantTimeEq};

/// Environment variable with comma-separated inference tokens.
pub const INFERENCE_TOKENS_ENV: &str = "FERROSERVE_INFERENCE_TOKENS";
/// Environment variable with comma-separated management tokens.
pub const MANAGEMENT_TOKENS_ENV: &str = "FERROSERVE_MANAGEMENT_TOKENS";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// Anyone: liveness, readiness and metrics.
    Open,
    /// Holders of an inference token: model metadata, readiness, inference,
    /// every `inference.GRPCInferenceService` method but `RepositoryIndex`.
    Inference,
    /// Holders of a management token: the repository and admin APIs (and
    /// gRPC `RepositoryIndex`).
    Management,
}

/// How a rule matches a path's segments (split on `/`, trailing `/`
/// ignored, exactly as the HTTP router splits them).
#[derive(Debug, Clone, Copy)]
pub enum PathMatch {
    /// The path is exactly these segments.
    Exact(&'static [&'static str]),
    /// The path starts with these segments (whole segments only).
    Prefix(&'static [&'static str]),
}

/// The route classes, first match wins. A path that matches no rule is
/// `Inference`: an unknown route never becomes open by accident, and a new
/// management route must be listed here (or live under a listed prefix).
pub const ROUTE_CLASSES: &[(PathMatch, RouteClass)] = &[
    (
        PathMatch::Exact(&["v2", "health", "live"]),
        RouteClass::Open,
    ),
    (
        PathMatch::Exact(&["v2", "health", "ready"]),
        RouteClass::Open,
    ),
    (PathMatch::Exact(&["metrics"]), RouteClass::Open),
    (
        PathMatch::Prefix(&["v2", "repository"]),
        RouteClass::Management,
    ),
    (PathMatch::Prefix(&["v2", "admin"]), RouteClass::Management),
    (PathMatch::Prefix(&["v2", "models"]), RouteClass::Inference),
    // The repository extension over gRPC is management, as over HTTP;
    // every other method of the service is inference.
    (
        PathMatch::Exact(&["inference.GRPCInferenceService", "RepositoryIndex"]),
        RouteClass::Management,
    ),
    (
        PathMatch::Prefix(&["inference.GRPCInferenceService"]),
        RouteClass::Inference,
    ),
];

/// The class of a request path.
pub fn classify(path: &str) -> RouteClass {
    let trimmed = path.trim_end_matches('/');
    for (rule, class) in ROUTE_CLASSES {
        let mut segments = trimmed.split('/').skip(1);
        let hit = match rule {
            PathMatch::Exact(want) => {
                want.iter().all(|w| segments.next() == Some(*w)) && segments.next().is_none()
            }
            PathMatch::Prefix(want) => want.iter().all(|w| segments.next() == Some(*w)),
        };
        if hit {
            return *class;
        }
    }
    RouteClass::Inference
}

/// One accepted token. Its `Debug` never shows the value, and it has no
/// `Display`, so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Box<[u8]>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The longest token accepted; longer presented tokens are refused without
/// comparing, which bounds the work a request can cause.
pub const MAX_TOKEN_BYTES: usize = 4096;

impl Token {
    /// A token: 1 to [`MAX_TOKEN_BYTES`] visible ASCII characters, no
    /// whitespace (it travels in a header).
    pub fn new(value: &str) -> Option<Token> {
        let ok = !value.is_empty()
            && value.len() <= MAX_TOKEN_BYTES
            && value.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Token(value.as_bytes().into()))
    }

    /// Constant-time comparison: the time taken depends only on the length
    /// of `presented` (which the caller chose), not on where it differs from
    /// the token nor on the token's length.
    fn matches(&self, presented: &[u8]) -> Choice {
        let token = &self.0;
        let mut eq = (presented.len() as u64).ct_eq(&(token.len() as u64));
        for (i, b) in presented.iter().enumerate() {
            eq &= b.ct_eq(&token[i % token.len()]);
        }
        eq
    }
}

/// The tokens of one class; never empty.
#[derive(Clone)]
pub struct TokenSet(Vec<Token>);

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSet({} tokens, redacted)", self.0.len())
    }
}

impl TokenSet {
    pub fn new(tokens: Vec<Token>) -> Option<TokenSet> {
        (!tokens.is_empty()).then_some(TokenSet(tokens))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is one of the tokens. Every token is compared,
    /// so the time taken does not reveal which one matched.
    pub fn contains(&self, presented: &[u8]) -> bool {
        // The length is the caller's own, so refusing early reveals nothing.
        if presented.len() > MAX_TOKEN_BYTES {
            return false;
        }
        let mut any = Choice::from(0);
        for t in &self.0 {
            any |= t.matches(presented);
        }
        any.into()
    }

    /// Reads a token file: one token per line, blank lines and lines
    /// starting with `#` ignored. Errors name the file and the line, never
    /// the line's content.
    pub fn parse_file(path: &Path, what: &str) -> Result<TokenSet, AuthConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
            what: format!("the {what} token file {}", path.display()),
            source,
        })?;
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match Token::new(line) {
                Some(t) => tokens.push(t),
                None => {
                    return Err(AuthConfigError::Invalid(format!(
                        "{what} token file {} line {}: a token is 1 to {MAX_TOKEN_BYTES} visible ASCII characters, without spaces",
                        path.display(),
                        n + 1
                    )))
                }
            }
        }
        TokenSet::new(tokens).ok_or_else(|| {
            AuthConfigError::Invalid(format!(
                "the {what} token file {} holds no token (one per line; blank lines and # comments are ignored)",
                path.display()
            ))
        })
    }

    /// Parses an environment variable's value: comma-separated tokens.
    pub fn parse_env(value: &OsString, var: &str) -> Result<TokenSet, AuthConfigError> {
        let Some(value) = value.to_str() else {
            return Err(AuthConfigError::Invalid(format!(
                "{var} is not valid UTF-8"
            )));
        };
        let mut tokens = Vec::new();
        for (n, item) in value.split(',').enumerate() {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            match Token::new(item) {
                Some(t) => tokens.push(t),
                None => {
                    return Err(AuthConfigError::Invalid(format!(
                        "{var}: token #{} is not 1 to {MAX_TOKEN_BYTES} visible ASCII characters without spaces",
                        n + 1
                    )))
                }
            }
        }
        TokenSet::new(tokens).ok_or_else(|| {
            AuthConfigError::Invalid(format!("{var} is set but holds no token (comma-separated)"))
        })
    }

    /// The tokens of one class from its file and its environment variable
    /// (both are accepted when both are given, which eases rotation). An
    /// unset or empty variable counts as absent; `None` means the class is
    /// open.
    pub fn load(
        file: Option<&Path>,
        env_value: Option<&OsString>,
        env_var: &str,
        what: &str,
    ) -> Result<Option<TokenSet>, AuthConfigError> {
        let mut tokens = Vec::new();
        if let Some(path) = file {
            tokens.extend(TokenSet::parse_file(path, what)?.0);
        }
        if let Some(v) = env_value.filter(|v| !v.is_empty()) {
            tokens.extend(TokenSet::parse_env(v, env_var)?.0);
        }
        Ok(TokenSet::new(tokens))
    }
}

/// A token file or variable that cannot be used; the message names the
/// file and line or the variable, never a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Which tokens each class requires; `None` leaves the class open.
#[derive(Debug, Clone, Default)]
pub struct AuthPolicy {
    pub inference: Option<TokenSet>,
    pub management: Option<TokenSet>,
}

/// Why a request was refused. Deliberately carries no detail: a client
/// learns nothing about which part of its credentials was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthorized;

impl AuthPolicy {
    /// No tokens: everything open.
    pub fn open() -> AuthPolicy {
        AuthPolicy::default()
    }

    /// From the command-line files and the process environment.
    pub fn from_config(
        inference_file: Option<&Path>,
        management_file: Option<&Path>,
    ) -> Result<AuthPolicy, AuthConfigError> {
        let inference_env = std::env::var_os(INFERENCE_TOKENS_ENV);
        let management_env = std::env::var_os(MANAGEMENT_TOKENS_ENV);
        Ok(AuthPolicy {
            inference: TokenSet::load(
                inference_file,
                inference_env.as_ref(),
                INFERENCE_TOKENS_ENV,
                "inference",
            )?,
            management: TokenSet::load(
                management_file,
                management_env.as_ref(),
                MANAGEMENT_TOKENS_ENV,
                "management",
            )?,
        })
    }

    /// True when no class needs a token, so requests skip the check.
    pub fn is_open(&self) -> bool {
        self.inference.is_none() && self.management.is_none()
    }

    fn tokens(&self, class: RouteClass) -> Option<&TokenSet> {
        match class {
            RouteClass::Open => None,
            RouteClass::Inference => self.inference.as_ref(),
            RouteClass::Management => self.management.as_ref(),
        }
    }

    /// Checks one request's `Authorization: Bearer <token>` against the
    /// tokens of its path's class.
    pub fn check(&self, path: &str, headers: &HeaderMap) -> Result<(), Unauthorized> {
        if self.is_open() {
            return Ok(());
        }
        let Some(tokens) = self.tokens(classify(path)) else {
            return Ok(());
        };
        match bearer(headers) {
            Some(presented) if tokens.contains(presented) => Ok(()),
            _ => Err(Unauthorized),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme name
/// case-insensitive, as RFC 7235 says).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Whether a request is gRPC (`content-type: application/grpc[+proto|...]`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The refusal: HTTP 401 with `WWW-Authenticate: Bearer` and
/// `{"error":"unauthorized"}`, or for gRPC a trailers-only response with
/// status UNAUTHENTICATED (16).
pub fn unauthorized_response(grpc: bool) -> Response<Full<Bytes>> {
    if grpc {
        let mut r = Response::new(Full::new(Bytes::new()));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from_static("16"));
        h.insert("grpc-message", HeaderValue::from_static("unauthorized"));
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::from_static(
        br#"{"error":"unauthorized"}"#,
    )));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(tokens: &[&str]) -> TokenSet {
        TokenSet::new(tokens.iter().map(|t| Token::new(t).unwrap()).collect()).unwrap()
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn classes_of_routes() {
        use RouteClass::*;
        for (path, class) in [
            ("/v2/health/live", Open),
            ("/v2/health/ready/", Open),
            ("/metrics", Open),
            ("/v2", Inference),
            ("/v2/models/mlp/infer", Inference),
            ("/v2/models/mlp/versions/1/ready", Inference),
            ("/inference.GRPCInferenceService/ModelInfer", Inference),
            ("/inference.GRPCInferenceService/ModelStatistics", Inference),
            (
                "/inference.GRPCInferenceService/RepositoryIndex",
                Management,
            ),
            ("/v2/models/stats", Inference),
            ("/v2/repository/index", Management),
            ("/v2/repository", Management),
            ("/v2/admin/anything/deep", Management),
            ("/v2/repositoryx", Inference),
            ("/v2/health/live/extra", Inference),
            ("/metrics/x", Inference),
            ("/v2//repository/index", Inference),
            ("/", Inference),
            ("", Inference),
            ("/unknown", Inference),
        ] {
            assert_eq!(classify(path), class, "{path}");
        }
    }

    #[test]
    fn tokens_compare_exactly() {
        let s = set(&["alpha-1", "beta"]);
        assert!(s.contains(b"alpha-1"));
        assert!(s.contains(b"beta"));
        for wrong in [
            &b""[..],
            b"alpha",
            b"alpha-12",
            b"alpha-2",
            b"bet",
            b"betabeta",
            b"BETA",
        ] {
            assert!(!s.contains(wrong), "{:?}", String::from_utf8_lossy(wrong));
        }
        assert!(!s.contains(&[b'a'; MAX_TOKEN_BYTES + 1]));
        assert!(Token::new(&"a".repeat(MAX_TOKEN_BYTES)).is_some());
        assert!(Token::new(&"a".repeat(MAX_TOKEN_BYTES + 1)).is_none());
        assert!(Token::new("tab\there").is_none() && Token::new("é").is_none());
    }

    #[test]
    fn bearer_header_forms() {
        let policy = AuthPolicy {
            inference: Some(set(&["tok"])),
            management: None,
        };
        let p = "/v2/models/m/infer";
        assert!(policy.check(p, &headers("Bearer tok")).is_ok());
        assert!(policy.check(p, &headers("bearer tok")).is_ok());
        assert!(policy.check(p, &headers("BEARER  tok ")).is_ok());
        assert!(policy.check(p, &headers("Bearer")).is_err());
        assert!(policy.check(p, &headers("Bearer ")).is_err());
        assert!(policy.check(p, &headers("Bearertok")).is_err());
        assert!(policy.check(p, &headers("Basic tok")).is_err());
        assert!(policy.check(p, &HeaderMap::new()).is_err());
        // Open routes and the open management class need nothing.
        assert!(policy.check("/v2/health/ready", &HeaderMap::new()).is_ok());
        assert!(policy
            .check("/v2/repository/index", &HeaderMap::new())
            .is_ok());
    }

    #[test]
    fn debug_never_shows_a_token() {
        let s = set(&["s3cr3t-value"]);
        let policy = AuthPolicy {
            inference: Some(s.clone()),
            management: Some(s),
        };
        let shown = format!("{policy:?} {:?}", Token::new("s3cr3t-value").unwrap());
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn token_files_skip_comments_and_name_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "# rotated 2024-01\n\n  first  \nsecond\n").unwrap();
        let s = TokenSet::parse_file(&good, "inference").unwrap();
        assert_eq!(s.len(), 2);
        assert!(s.contains(b"first") && s.contains(b"second"));

        let bad = dir.path().join("bad");
        std::fs::write(&bad, "ok\nhas a space\n").unwrap();
        let e = format!("{:#}", TokenSet::parse_file(&bad, "inference").unwrap_err());
        assert!(e.contains("line 2") && e.contains("bad"), "{e}");
        assert!(!e.contains("has a space"), "{e}");

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "# nothing yet\n").unwrap();
        let e = format!(
            "{:#}",
            TokenSet::parse_file(&empty, "management").unwrap_err()
        );
        assert!(e.contains("holds no token"), "{e}");

        let e = format!(
            "{:#}",
            TokenSet::parse_file(&dir.path().join("missing"), "inference").unwrap_err()
        );
        assert!(e.contains("cannot read the inference token file"), "{e}");
    }

    #[test]
    fn env_tokens_are_comma_separated() {
        let v = OsString::from(" a1 ,, b2,");
        let s = TokenSet::parse_env(&v, INFERENCE_TOKENS_ENV).unwrap();
        assert_eq!(s.len(), 2);
        assert!(TokenSet::parse_env(&OsString::from(" , "), INFERENCE_TOKENS_ENV).is_err());
        // Unset and empty both leave the class open.
        assert!(TokenSet::load(None, None, "X", "inference")
            .unwrap()
            .is_none());
        assert!(
            TokenSet::load(None, Some(&OsString::new()), "X", "inference")
                .unwrap()
                .is_none()
        );
    }
}
