use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{HeaderMap, Method, Request};

use crate::LoadError;

/// A request prepared once and sent many times.
///
/// The body is `Bytes`, so each send shares it instead of copying: a 400 KB
/// batch of images costs the generator nothing per request.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    /// Path and query, e.g. `/v2/models/mlp/infer`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RequestSpec {
    pub fn get(path: impl Into<String>) -> RequestSpec {
        RequestSpec {
            method: Method::GET,
            path: path.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// A PUT (management calls, such as applying a configuration).
    pub fn put(path: impl Into<String>, body: impl Into<Bytes>) -> RequestSpec {
        RequestSpec {
            method: Method::PUT,
            ..RequestSpec::post(path, body)
        }
    }

    pub fn post(path: impl Into<String>, body: impl Into<Bytes>) -> RequestSpec {
        RequestSpec {
            method: Method::POST,
            path: path.into(),
            headers: HeaderMap::new(),
            body: body.into(),
        }
    }

    /// Adds a header. Fallible because names and values come from users
    /// (command lines, files) and a bad one should be reported, not panic.
    pub fn header<K, V>(mut self, name: K, value: V) -> Result<RequestSpec, LoadError>
    where
        K: TryInto<HeaderName>,
        K::Error: std::fmt::Display,
        V: TryInto<HeaderValue>,
        V::Error: std::fmt::Display,
    {
        let name = name
            .try_into()
            .map_err(|e| LoadError::Header(e.to_string()))?;
        let value = value
            .try_into()
            .map_err(|e| LoadError::Header(e.to_string()))?;
        self.headers.append(name, value);
        Ok(self)
    }

    /// The hyper request for one send. hyper's low-level client does not add
    /// `Host`, which HTTP/1.1 requires, so it is added here unless the spec
    /// names one; `Content-Length` follows from the body.
    pub(crate) fn to_request(&self, host: &HeaderValue) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self
            .path
            .parse()
            .unwrap_or_else(|_| hyper::Uri::from_static("/"));
        let headers = req.headers_mut();
        headers.clone_from(&self.headers);
        if !headers.contains_key(HOST) {
            headers.insert(HOST, host.clone());
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let err = RequestSpec::get("/").header("bad name", "x").unwrap_err();
        assert!(matches!(err, LoadError::Header(_)), "{err}");
        let err = RequestSpec::get("/")
            .header("x-ok", "line\nbreak")
            .unwrap_err();
        assert!(matches!(err, LoadError::Header(_)), "{err}");
    }

    #[test]
    fn host_is_added_unless_given() {
        let host = HeaderValue::from_static("127.0.0.1:1");
        let spec = RequestSpec::post("/v2/models/m/infer", "body")
            .header("x-a", "1")
            .unwrap();
        let req = spec.to_request(&host);
        assert_eq!(req.headers()[HOST], "127.0.0.1:1");
        assert_eq!(req.headers()["x-a"], "1");
        assert_eq!(req.uri().path(), "/v2/models/m/infer");
        let spec = spec.header("host", "example").unwrap();
        assert_eq!(spec.to_request(&host).headers()[HOST], "example");
    }
}
