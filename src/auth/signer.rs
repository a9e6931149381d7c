//! Signing URLs (PROTOCOL.md §2): pure functions, no I/O, no clock.

use super::keys::{ApiKey, HmacSha256, keyed_mac};
use crate::path::FilePath;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use std::fmt;

/// Feeds the canonical message `<path>?expiry=<expiry>[&method=<method>]` to `mac`.
pub(crate) fn feed_message(
    mac: &mut HmacSha256,
    path: &[u8],
    expiry: &[u8],
    method: Option<&[u8]>,
) {
    mac.update(path);
    mac.update(b"?expiry=");
    mac.update(expiry);
    if let Some(method) = method {
        mac.update(b"&method=");
        mac.update(method);
    }
}

/// The signature of a signed URL: `base64url_nopad(HMAC-SHA256(key, msg))` with
/// `msg = "<path>?expiry=<expiry>&method=<method>"`, or `"<path>?expiry=<expiry>"` when
/// `method` is `None` (the legacy, seed-style URLs without a method).
///
/// `path` is signed exactly as given: for URLs made by this crate, the
/// [`FilePath::to_uri_path`] form (percent-encoded, no leading `/`).
///
/// ```
/// use tower_uploads::auth::signature;
///
/// assert_eq!(
///     signature(b"test_key", "private/image.png", 1735689600, Some("get")),
///     "iF81idXx9ubaxiZNLPPT9gN9keanDydFx2D4JD_uEOg",
/// );
/// ```
pub fn signature(key: &[u8], path: &str, expiry: u64, method: Option<&str>) -> String {
    let mut mac = keyed_mac(key);
    let expiry = expiry.to_string();
    feed_message(
        &mut mac,
        path.as_bytes(),
        expiry.as_bytes(),
        method.map(str::as_bytes),
    );
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The method a signed URL is valid for (`method=get` or `method=put`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignedMethod {
    /// `get`: delivery (`GET` and `HEAD`).
    Get,
    /// `put`: upload.
    Put,
}

impl SignedMethod {
    /// The lowercase string used in URLs and signed messages: `"get"` or `"put"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignedMethod::Get => "get",
            SignedMethod::Put => "put",
        }
    }

    /// Parses the exact lowercase strings `"get"` and `"put"`; anything else is `None`.
    pub fn from_param(s: &str) -> Option<Self> {
        match s {
            "get" => Some(SignedMethod::Get),
            "put" => Some(SignedMethod::Put),
            _ => None,
        }
    }

    /// Whether a request with `method` is allowed by this signature: `get` allows `GET` and
    /// `HEAD`, `put` allows `PUT`.
    pub fn allows(self, method: &http::Method) -> bool {
        match self {
            SignedMethod::Get => method == http::Method::GET || method == http::Method::HEAD,
            SignedMethod::Put => method == http::Method::PUT,
        }
    }
}

impl fmt::Display for SignedMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A URL signed by a [`Signer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedUrl {
    /// The full URL: `<base>/<path>?expiry=<e>&method=<m>&signature=<s>`.
    pub url: String,
    /// The file the URL is for.
    pub path: FilePath,
    /// The method it allows.
    pub method: SignedMethod,
    /// Unix seconds after which it is refused.
    pub expiry: u64,
    /// The signature (base64url, no padding).
    pub signature: String,
}

/// Makes signed URLs with one key (the primary key of the server's key set).
///
/// ```
/// use tower_uploads::auth::{ApiKey, SignedMethod, Signer};
/// use tower_uploads::path::FilePath;
///
/// let signer = Signer::new(ApiKey::new("test_key"), "https://up.example.com/");
/// let path = FilePath::new("private/image.png").unwrap();
/// let signed = signer.sign(&path, SignedMethod::Get, 1735689600);
/// assert_eq!(
///     signed.url,
///     "https://up.example.com/private/image.png?expiry=1735689600&method=get\
///      &signature=iF81idXx9ubaxiZNLPPT9gN9keanDydFx2D4JD_uEOg",
/// );
/// ```
#[derive(Clone, Debug)]
pub struct Signer {
    key: ApiKey,
    base_url: String,
}

impl Signer {
    /// A signer with `key`, making URLs under `base_url` (trailing `/` ignored).
    pub fn new(key: ApiKey, base_url: impl Into<String>) -> Self {
        let mut base_url = base_url.into();
        while base_url.ends_with('/') {
            base_url.pop();
        }
        Signer { key, base_url }
    }

    /// The base URL, without trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A URL for `method` on `path`, valid until `expiry` (unix seconds).
    ///
    /// The signed path is exactly [`FilePath::to_uri_path`], as it appears in the URL.
    pub fn sign(&self, path: &FilePath, method: SignedMethod, expiry: u64) -> SignedUrl {
        let uri_path = path.to_uri_path();
        let sig = signature(
            self.key.expose_secret(),
            &uri_path,
            expiry,
            Some(method.as_str()),
        );
        let url = format!(
            "{}/{}?expiry={}&method={}&signature={}",
            self.base_url,
            uri_path,
            expiry,
            method.as_str(),
            sig
        );
        SignedUrl {
            url,
            path: path.clone(),
            method,
            expiry,
            signature: sig,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_test_vector() {
        assert_eq!(
            signature(b"test_key", "private/image.png", 1735689600, Some("get")),
            "iF81idXx9ubaxiZNLPPT9gN9keanDydFx2D4JD_uEOg"
        );
    }

    #[test]
    fn legacy_message_has_no_method() {
        let with = signature(b"k", "a.png", 10, Some("put"));
        let without = signature(b"k", "a.png", 10, None);
        assert_ne!(with, without);
        // Independently computed message.
        let mut mac = keyed_mac(b"k");
        mac.update(b"a.png?expiry=10");
        assert_eq!(without, URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn signer_url_uses_encoded_path() {
        let signer = Signer::new(ApiKey::new("k"), "http://h//");
        let path = FilePath::new("f older/a b.png").unwrap();
        let s = signer.sign(&path, SignedMethod::Put, 42);
        let sig = signature(b"k", "f%20older/a%20b.png", 42, Some("put"));
        assert_eq!(
            s.url,
            format!("http://h/f%20older/a%20b.png?expiry=42&method=put&signature={sig}")
        );
        assert_eq!(s.signature, sig);
        assert_eq!(s.path, path);
        assert_eq!(s.method, SignedMethod::Put);
        assert_eq!(s.expiry, 42);
        assert_eq!(signer.base_url(), "http://h");
    }

    #[test]
    fn methods() {
        use http::Method;
        assert_eq!(SignedMethod::from_param("get"), Some(SignedMethod::Get));
        assert_eq!(SignedMethod::from_param("put"), Some(SignedMethod::Put));
        assert_eq!(SignedMethod::from_param("GET"), None);
        assert_eq!(SignedMethod::from_param(""), None);
        assert!(SignedMethod::Get.allows(&Method::GET));
        assert!(SignedMethod::Get.allows(&Method::HEAD));
        assert!(!SignedMethod::Get.allows(&Method::PUT));
        assert!(SignedMethod::Put.allows(&Method::PUT));
        assert!(!SignedMethod::Put.allows(&Method::POST));
        assert_eq!(SignedMethod::Put.to_string(), "put");
    }
}
