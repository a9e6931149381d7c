//! Verifying a request's credentials (PROTOCOL.md §2): pure, no I/O, the clock is a parameter.

use super::keys::KeySet;
use super::signer::{SignedMethod, feed_message};
use crate::error::{ApiError, ErrorKind};
use crate::path::FilePath;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::Mac;
use percent_encoding::percent_decode_str;
use std::borrow::Cow;

/// Standard base64, padding optional (url-safe input is mapped to the standard alphabet
/// first). Non-canonical trailing bits are refused.
const SIGNATURE_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest `signature` value looked at (a 32-byte signature is 43 or 44 characters, or a few
/// more when percent-encoded).
const MAX_SIGNATURE_LEN: usize = 192;

/// How a request was authorized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Via {
    /// `Authorization: Bearer <api key>`.
    Bearer,
    /// A signed URL (`expiry`, `method`, `signature` in the query).
    SignedUrl,
    /// An upload-session key (reserved: not produced yet).
    Session,
}

/// A request whose credentials were verified; the [`Signature`](super::Signature) middleware
/// puts it in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// How the request was authorized.
    pub via: Via,
    /// For a signed URL, the (validated, decoded) path it was signed for; `None` for a
    /// bearer key, which is not bound to a path.
    pub path: Option<FilePath>,
    /// For a signed URL, the method it was signed for; `None` for a bearer key and for a
    /// legacy signed URL without `method`.
    pub method: Option<SignedMethod>,
    /// For a signed URL, its expiry (unix seconds); `None` for a bearer key.
    pub expiry: Option<u64>,
}

/// What [`Verifier::verify`] looks at in a request.
#[derive(Clone, Copy, Debug)]
pub struct VerifyInput<'a> {
    /// The request method.
    pub method: &'a http::Method,
    /// The request path after the mount prefix, still percent-encoded; the leading `/` is
    /// optional.
    pub raw_path: &'a str,
    /// The raw query string (without `?`), if any.
    pub query: Option<&'a str>,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a http::HeaderValue>,
    /// Only a bearer key counts (e.g. `POST /signatures`): a signed URL is ignored.
    pub bearer_only: bool,
}

/// Checks bearer keys and signed URLs against a [`KeySet`].
///
/// By default URLs without `method` are refused and there is no leeway for clock skew.
#[derive(Clone, Debug)]
pub struct Verifier {
    /// `None`: no key at all (every credential is refused).
    keys: Option<KeySet>,
    legacy_signatures: bool,
    leeway_secs: u64,
}

const MSG_MISSING: &str = "this request needs an API key (Authorization: Bearer) or a signed URL";
const MSG_MISSING_BEARER: &str = "this request needs an API key (Authorization: Bearer)";
const MSG_TOKEN_INVALID: &str = "the Authorization header does not carry a valid API key";
const MSG_SIG_INVALID: &str = "the URL signature is not valid for this request";
const MSG_SIG_EXPIRED: &str = "the signed URL has expired";

fn invalid() -> ApiError {
    ApiError::new(ErrorKind::SignatureInvalid, MSG_SIG_INVALID)
}

impl Verifier {
    /// A verifier for `keys`, refusing legacy URLs, with no leeway.
    pub fn new(keys: KeySet) -> Self {
        Verifier {
            keys: Some(keys),
            legacy_signatures: false,
            leeway_secs: 0,
        }
    }

    /// A verifier that knows no key: it refuses every bearer key (401 `token_invalid`) and
    /// every signed URL (403 `signature_invalid`), and asks for credentials where they are
    /// needed (401 `token_missing`). For a stack whose requests are authorized by the app's
    /// own middleware, which puts a [`Grant`](crate::Grant) in them.
    pub fn without_keys() -> Self {
        Verifier {
            keys: None,
            legacy_signatures: false,
            leeway_secs: 0,
        }
    }

    /// Accept signed URLs without a `method` parameter (signed over
    /// `"<path>?expiry=<expiry>"`, as in ittybit's seeds), for `PUT` only. Off by default.
    #[must_use]
    pub fn legacy_signatures(mut self, on: bool) -> Self {
        self.legacy_signatures = on;
        self
    }

    /// Seconds a signed URL is still accepted after its expiry (clock skew). Default 0.
    #[must_use]
    pub fn leeway_secs(mut self, secs: u64) -> Self {
        self.leeway_secs = secs;
        self
    }

    /// The clock-skew leeway, in seconds.
    pub fn leeway(&self) -> u64 {
        self.leeway_secs
    }

    /// The key set (`None` for [`without_keys`](Self::without_keys)).
    pub fn keys(&self) -> Option<&KeySet> {
        self.keys.as_ref()
    }

    /// Verifies the credentials of a request at time `now_unix` (unix seconds).
    ///
    /// - `Authorization` present: it must be `Bearer <key>` (scheme case-insensitive) with a
    ///   key of the set, else 401 `token_invalid`.
    /// - Else, unless `bearer_only`, a `signature` query parameter makes it a signed URL:
    ///   anything wrong with it is 403 `signature_invalid`, and a valid signature past its
    ///   expiry (plus leeway) is 403 `signature_expired`.
    /// - Otherwise 401 `token_missing`.
    ///
    /// A signed URL whose signature holds but whose path is not a valid
    /// [`FilePath`] is 400 `path_invalid`.
    ///
    /// **Which path a signature designates.** The path signed is a string `S`; the path it
    /// grants is `S` percent-decoded once, the way the request's own path is decoded into
    /// the path served. So the signature is checked over the request's path as sent (then
    /// `S` is that path and the two agree), and else over the path as decoded, but the
    /// latter only when the decoded path has no percent-escape left in it (`%` and two hex
    /// digits), so that decoding it again would not change it. PROTOCOL.md §2 says "as sent,
    /// and if that fails, as decoded" without saying what a decoded form that still holds
    /// escapes means; read naively, a signature for `a/cat%20one.png` (the file `a/cat one.png`)
    /// would also hold for the request path `a/cat%2520one.png`, which serves the file
    /// literally named `a/cat%20one.png`. Under this rule a signature designates exactly
    /// one stored path:
    ///
    /// - URLs made by [`Signer`](super::Signer) (which signs the percent-encoded path, as it
    ///   appears in the URL) verify as sent;
    /// - ittybit's SDKs sign the plain `folder/filename` and send it percent-encoded: that
    ///   verifies as decoded, for every path without a literal `%XX` in it;
    /// - a plain-signed path that contains a literal `%XX` (a file named `100%25.txt`) is
    ///   ambiguous and refused (403): sign the percent-encoded form (`100%2525.txt`) instead.
    pub fn verify(&self, req: &VerifyInput<'_>, now_unix: u64) -> Result<Verified, ApiError> {
        if let Some(header) = req.authorization {
            return self.verify_bearer(header);
        }
        if req.bearer_only {
            return Err(ApiError::new(ErrorKind::TokenMissing, MSG_MISSING_BEARER));
        }
        let params = QueryParams::parse(req.query.unwrap_or(""));
        if params.signature.is_none() {
            return Err(ApiError::new(ErrorKind::TokenMissing, MSG_MISSING));
        }
        self.verify_signed(req, &params, now_unix)
    }

    fn verify_bearer(&self, header: &http::HeaderValue) -> Result<Verified, ApiError> {
        let token_invalid = || ApiError::new(ErrorKind::TokenInvalid, MSG_TOKEN_INVALID);
        let value = std::str::from_utf8(header.as_bytes()).map_err(|_| token_invalid())?;
        let (scheme, token) = value
            .trim()
            .split_once([' ', '\t'])
            .ok_or_else(token_invalid)?;
        let token = token.trim_matches([' ', '\t']);
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(token_invalid());
        }
        if !self
            .keys
            .as_ref()
            .is_some_and(|keys| keys.find_bearer(token.as_bytes()))
        {
            return Err(token_invalid());
        }
        Ok(Verified {
            via: Via::Bearer,
            path: None,
            method: None,
            expiry: None,
        })
    }

    fn verify_signed(
        &self,
        req: &VerifyInput<'_>,
        params: &QueryParams<'_>,
        now_unix: u64,
    ) -> Result<Verified, ApiError> {
        if params.duplicated {
            return Err(invalid());
        }
        let signature = params
            .signature
            .and_then(decode_signature)
            .ok_or_else(invalid)?;

        // The expiry exactly as sent (percent-decoded): ASCII digits only, fitting a u64.
        let expiry_text = params.expiry.map(decode_value).ok_or_else(invalid)?;
        let expiry = parse_expiry(&expiry_text).ok_or_else(invalid)?;

        let method = match params.method {
            Some(raw) => {
                let text = decode_value(raw);
                let method = std::str::from_utf8(&text)
                    .ok()
                    .and_then(SignedMethod::from_param)
                    .ok_or_else(invalid)?;
                if !method.allows(req.method) {
                    return Err(invalid());
                }
                Some(method)
            }
            None if self.legacy_signatures && req.method == http::Method::PUT => None,
            None => return Err(invalid()),
        };
        let method_text = method.map(|m| m.as_str().as_bytes());

        // The path as sent, then as decoded; either way the signed string, percent-decoded
        // once, is the path served (see `verify`): one signature, one stored path.
        let raw_path = req.raw_path.strip_prefix('/').unwrap_or(req.raw_path);
        let mut valid = self.check(&signature, raw_path.as_bytes(), &expiry_text, method_text);
        if !valid {
            let decoded: Cow<'_, [u8]> = percent_decode_str(raw_path).into();
            if *decoded != *raw_path.as_bytes() && !has_escape(&decoded) {
                valid = self.check(&signature, &decoded, &expiry_text, method_text);
            }
        }
        if !valid {
            return Err(invalid());
        }
        // Only a valid signature may tell that it has expired.
        if now_unix > expiry.saturating_add(self.leeway_secs) {
            return Err(ApiError::new(ErrorKind::SignatureExpired, MSG_SIG_EXPIRED));
        }
        let path = FilePath::from_uri_path(raw_path)?;
        Ok(Verified {
            via: Via::SignedUrl,
            path: Some(path),
            method,
            expiry: Some(expiry),
        })
    }

    /// Whether `signature` is the HMAC of the message under any key. Every key is tried,
    /// whatever the outcome, each with the MAC's constant-time comparison.
    fn check(
        &self,
        signature: &[u8; 32],
        path: &[u8],
        expiry: &[u8],
        method: Option<&[u8]>,
    ) -> bool {
        let mut valid = false;
        for keyed in self.keys.iter().flat_map(KeySet::keyed_macs) {
            let mut mac = keyed.clone();
            feed_message(&mut mac, path, expiry, method);
            // Non-short-circuiting `|`: no early exit.
            valid |= mac.verify_slice(signature).is_ok();
        }
        valid
    }
}

/// The signed-URL parameters of a query (raw, still percent-encoded values).
#[derive(Default)]
struct QueryParams<'a> {
    expiry: Option<&'a str>,
    method: Option<&'a str>,
    signature: Option<&'a str>,
    /// One of the three appeared more than once.
    duplicated: bool,
}

impl<'a> QueryParams<'a> {
    fn parse(query: &'a str) -> Self {
        let mut params = QueryParams::default();
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name: Cow<'_, [u8]> = percent_decode_str(name).into();
            let slot = match &*name {
                b"expiry" => &mut params.expiry,
                b"method" => &mut params.method,
                b"signature" => &mut params.signature,
                _ => continue,
            };
            if slot.is_some() {
                params.duplicated = true;
            }
            *slot = Some(value);
        }
        params
    }
}

/// Whether `path` holds a percent-escape (`%` and two hex digits), that is, whether decoding
/// it again would change it. A signature over such a decoded path designates the path it
/// decodes to, not the one served for this request: `a/cat%2520one.png` decodes to
/// `a/cat%20one.png` (a file literally so named), whose signed form designates `a/cat one.png`.
fn has_escape(path: &[u8]) -> bool {
    path.windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// A query value, percent-decoded (`+` is kept as `+`).
fn decode_value(raw: &str) -> Cow<'_, [u8]> {
    percent_decode_str(raw).into()
}

fn parse_expiry(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Decodes a signature sent in url-safe or standard base64, padded or not (a `+` that became
/// a space on the way is a `+`), into exactly 32 bytes.
fn decode_signature(raw: &str) -> Option<[u8; 32]> {
    if raw.len() > MAX_SIGNATURE_LEN {
        return None;
    }
    // On the stack: percent-decoding never lengthens, base64 decoding shortens.
    let mut standard = [0u8; MAX_SIGNATURE_LEN];
    let mut len = 0;
    for b in percent_decode_str(raw) {
        standard[len] = match b {
            b' ' | b'-' => b'+',
            b'_' => b'/',
            other => other,
        };
        len += 1;
    }
    let mut bytes = [0u8; MAX_SIGNATURE_LEN];
    let n = SIGNATURE_B64
        .decode_slice(&standard[..len], &mut bytes)
        .ok()?;
    bytes[..n].try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::keyed_mac;
    use crate::auth::signer::signature;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    use http::{HeaderValue, Method};

    const NOW: u64 = 1_735_689_000;
    const FUTURE: u64 = 1_735_689_600;
    const PAST: u64 = 1_735_688_000;
    const K1: &str = "primary-key";
    const K2: &str = "secondary-key";

    fn keys() -> KeySet {
        use crate::auth::ApiKey;
        KeySet::new([ApiKey::new(K1), ApiKey::new(K2), ApiKey::new("test_key")])
    }

    /// A signature over an arbitrary expiry string.
    fn sign_raw(key: &str, path: &str, expiry: &str, method: Option<&str>) -> String {
        let mut mac = keyed_mac(key.as_bytes());
        feed_message(
            &mut mac,
            path.as_bytes(),
            expiry.as_bytes(),
            method.map(str::as_bytes),
        );
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn q(path: &str, expiry: u64, method: &str, key: &str) -> String {
        let sig = signature(key.as_bytes(), path, expiry, Some(method));
        format!("expiry={expiry}&method={method}&signature={sig}")
    }

    struct Row {
        name: &'static str,
        method: Method,
        path: String,
        query: Option<String>,
        auth: Option<HeaderValue>,
        bearer_only: bool,
        legacy: bool,
        leeway: u64,
        want: Result<Via, ErrorKind>,
    }

    fn row(
        name: &'static str,
        method: Method,
        path: &str,
        query: Option<String>,
        want: Result<Via, ErrorKind>,
    ) -> Row {
        Row {
            name,
            method,
            path: path.to_owned(),
            query,
            auth: None,
            bearer_only: false,
            legacy: false,
            leeway: 0,
            want,
        }
    }

    impl Row {
        fn auth(mut self, v: HeaderValue) -> Self {
            self.auth = Some(v);
            self
        }
        fn bearer_only(mut self) -> Self {
            self.bearer_only = true;
            self
        }
        fn legacy(mut self) -> Self {
            self.legacy = true;
            self
        }
        fn leeway(mut self, secs: u64) -> Self {
            self.leeway = secs;
            self
        }
    }

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn table() {
        use ErrorKind::*;
        use Via::*;
        let get = Method::GET;
        let put = Method::PUT;
        let p = "private/image.png";
        let good_put = q(p, FUTURE, "put", K1);
        let good_sig = signature(K1.as_bytes(), p, FUTURE, Some("put"));
        let sig_bytes = URL_SAFE_NO_PAD.decode(&good_sig).unwrap();
        // An expiry whose signature has both '-'/'_' (url-safe) characters, so that the
        // standard-alphabet rows exercise '+' and '/'.
        let (e2, sig2) = (FUTURE..FUTURE + 10_000)
            .map(|e| (e, signature(K1.as_bytes(), p, e, Some("put"))))
            .find(|(_, s)| s.contains('-') && s.contains('_'))
            .unwrap();
        let std2 = STANDARD.encode(URL_SAFE_NO_PAD.decode(&sig2).unwrap());
        let std2_q = |s: &str| format!("expiry={e2}&method=put&signature={s}");
        let legacy_sig = signature(K1.as_bytes(), p, FUTURE, None);
        let b31 = URL_SAFE_NO_PAD.encode(&sig_bytes[..31]);
        let mut v33 = sig_bytes.clone();
        v33.push(0);
        let b33 = URL_SAFE_NO_PAD.encode(&v33);
        let enc = "a%20b.png";
        let sig_enc = signature(K1.as_bytes(), enc, FUTURE, Some("put"));
        let sig_dec = signature(K1.as_bytes(), "a b.png", FUTURE, Some("put"));
        let sig_plus = signature(K1.as_bytes(), "a+b.png", FUTURE, Some("put"));
        let with_expiry = |expiry: &str| {
            format!(
                "expiry={expiry}&method=put&signature={}",
                sign_raw(K1, p, expiry, Some("put"))
            )
        };

        let rows = vec![
            row(
                "put ok",
                put.clone(),
                p,
                Some(good_put.clone()),
                Ok(SignedUrl),
            ),
            row(
                "leading slash",
                put.clone(),
                "/private/image.png",
                Some(good_put.clone()),
                Ok(SignedUrl),
            ),
            row(
                "rotation: second key",
                put.clone(),
                p,
                Some(q(p, FUTURE, "put", K2)),
                Ok(SignedUrl),
            ),
            row(
                "protocol test vector",
                get.clone(),
                p,
                Some(q(p, 1735689600, "get", "test_key")),
                Ok(SignedUrl),
            ),
            row(
                "unknown key",
                put.clone(),
                p,
                Some(q(p, FUTURE, "put", "other")),
                Err(SignatureInvalid),
            ),
            row(
                "put with get signature",
                put.clone(),
                p,
                Some(q(p, FUTURE, "get", K1)),
                Err(SignatureInvalid),
            ),
            row(
                "get with put signature",
                get.clone(),
                p,
                Some(good_put.clone()),
                Err(SignatureInvalid),
            ),
            row(
                "get ok",
                get.clone(),
                p,
                Some(q(p, FUTURE, "get", K1)),
                Ok(SignedUrl),
            ),
            row(
                "head with get signature",
                Method::HEAD,
                p,
                Some(q(p, FUTURE, "get", K1)),
                Ok(SignedUrl),
            ),
            row(
                "head with put signature",
                Method::HEAD,
                p,
                Some(good_put.clone()),
                Err(SignatureInvalid),
            ),
            row(
                "post with put signature",
                Method::POST,
                p,
                Some(good_put.clone()),
                Err(SignatureInvalid),
            ),
            row(
                "delete with get signature",
                Method::DELETE,
                p,
                Some(q(p, FUTURE, "get", K1)),
                Err(SignatureInvalid),
            ),
            row(
                "method param uppercase",
                put.clone(),
                p,
                Some(format!(
                    "expiry={FUTURE}&method=PUT&signature={}",
                    sign_raw(K1, p, &FUTURE.to_string(), Some("PUT"))
                )),
                Err(SignatureInvalid),
            ),
            row(
                "method param unknown",
                put.clone(),
                p,
                Some(format!(
                    "expiry={FUTURE}&method=post&signature={}",
                    sign_raw(K1, p, &FUTURE.to_string(), Some("post"))
                )),
                Err(SignatureInvalid),
            ),
            row(
                "expired",
                put.clone(),
                p,
                Some(q(p, PAST, "put", K1)),
                Err(SignatureExpired),
            ),
            row(
                "expired with bad signature",
                put.clone(),
                p,
                Some(q(p, PAST, "put", "other")),
                Err(SignatureInvalid),
            ),
            row(
                "expired with wrong method",
                get.clone(),
                p,
                Some(q(p, PAST, "put", K1)),
                Err(SignatureInvalid),
            ),
            row(
                "expiry == now",
                put.clone(),
                p,
                Some(q(p, NOW, "put", K1)),
                Ok(SignedUrl),
            ),
            row(
                "expiry == now - 1",
                put.clone(),
                p,
                Some(q(p, NOW - 1, "put", K1)),
                Err(SignatureExpired),
            ),
            row(
                "within leeway",
                put.clone(),
                p,
                Some(q(p, NOW - 5, "put", K1)),
                Ok(SignedUrl),
            )
            .leeway(10),
            row(
                "beyond leeway",
                put.clone(),
                p,
                Some(q(p, NOW - 11, "put", K1)),
                Err(SignatureExpired),
            )
            .leeway(10),
            row(
                "huge expiry",
                put.clone(),
                p,
                Some(q(p, u64::MAX, "put", K1)),
                Ok(SignedUrl),
            )
            .leeway(u64::MAX),
            row(
                "overflowing expiry",
                put.clone(),
                p,
                Some(with_expiry("18446744073709551616")),
                Err(SignatureInvalid),
            ),
            row(
                "negative expiry",
                put.clone(),
                p,
                Some(with_expiry("-5")),
                Err(SignatureInvalid),
            ),
            row(
                "plus-signed expiry",
                put.clone(),
                p,
                Some(with_expiry("+1735689600")),
                Err(SignatureInvalid),
            ),
            row(
                "empty expiry",
                put.clone(),
                p,
                Some(with_expiry("")),
                Err(SignatureInvalid),
            ),
            row(
                "missing expiry",
                put.clone(),
                p,
                Some(format!("method=put&signature={good_sig}")),
                Err(SignatureInvalid),
            ),
            row(
                "leading-zero expiry signed as sent",
                put.clone(),
                p,
                Some(with_expiry("01735689600")),
                Ok(SignedUrl),
            ),
            row(
                "expiry changed",
                put.clone(),
                p,
                Some(format!(
                    "expiry={}&method=put&signature={good_sig}",
                    FUTURE + 1
                )),
                Err(SignatureInvalid),
            ),
            row(
                "padded url-safe",
                put.clone(),
                p,
                Some(std2_q(
                    &URL_SAFE.encode(URL_SAFE_NO_PAD.decode(&sig2).unwrap()),
                )),
                Ok(SignedUrl),
            ),
            row(
                "standard padded, %2B",
                put.clone(),
                p,
                Some(std2_q(
                    &std2
                        .replace('+', "%2B")
                        .replace('/', "%2F")
                        .replace('=', "%3D"),
                )),
                Ok(SignedUrl),
            ),
            row(
                "standard, raw +",
                put.clone(),
                p,
                Some(std2_q(&std2)),
                Ok(SignedUrl),
            ),
            row(
                "standard, + sent as space",
                put.clone(),
                p,
                Some(std2_q(&std2.replace('+', "%20"))),
                Ok(SignedUrl),
            ),
            row(
                "standard unpadded",
                put.clone(),
                p,
                Some(std2_q(std2.trim_end_matches('='))),
                Ok(SignedUrl),
            ),
            row(
                "too much padding",
                put.clone(),
                p,
                Some(std2_q(&format!("{std2}=="))),
                Err(SignatureInvalid),
            ),
            row(
                "altered last char",
                put.clone(),
                p,
                Some(std2_q(&{
                    let mut s = sig2.clone();
                    let last = s.pop().unwrap();
                    s.push(if last == 'A' { 'B' } else { 'A' });
                    s
                })),
                Err(SignatureInvalid),
            ),
            row(
                "truncated signature",
                put.clone(),
                p,
                Some(format!(
                    "expiry={FUTURE}&method=put&signature={}",
                    &good_sig[..good_sig.len() - 2]
                )),
                Err(SignatureInvalid),
            ),
            row(
                "31 bytes",
                put.clone(),
                p,
                Some(format!("expiry={FUTURE}&method=put&signature={b31}")),
                Err(SignatureInvalid),
            ),
            row(
                "33 bytes",
                put.clone(),
                p,
                Some(format!("expiry={FUTURE}&method=put&signature={b33}")),
                Err(SignatureInvalid),
            ),
            row(
                "non-base64",
                put.clone(),
                p,
                Some(format!("expiry={FUTURE}&method=put&signature=!!!!$$$$")),
                Err(SignatureInvalid),
            ),
            row(
                "empty signature",
                put.clone(),
                p,
                Some(format!("expiry={FUTURE}&method=put&signature=")),
                Err(SignatureInvalid),
            ),
            row(
                "signature without =",
                put.clone(),
                p,
                Some(format!("expiry={FUTURE}&method=put&signature")),
                Err(SignatureInvalid),
            ),
            row(
                "very long signature",
                put.clone(),
                p,
                Some(format!(
                    "expiry={FUTURE}&method=put&signature={}",
                    "A".repeat(10_000)
                )),
                Err(SignatureInvalid),
            ),
            row(
                "duplicated signature",
                put.clone(),
                p,
                Some(format!("{good_put}&signature={good_sig}")),
                Err(SignatureInvalid),
            ),
            row(
                "duplicated expiry",
                put.clone(),
                p,
                Some(format!("expiry={FUTURE}&{good_put}")),
                Err(SignatureInvalid),
            ),
            row(
                "duplicated method",
                put.clone(),
                p,
                Some(format!("{good_put}&method=put")),
                Err(SignatureInvalid),
            ),
            row(
                "duplicated via encoded name",
                put.clone(),
                p,
                Some(format!("{good_put}&%73ignature={good_sig}")),
                Err(SignatureInvalid),
            ),
            row(
                "other order, extra params",
                put.clone(),
                p,
                Some(format!(
                    "signature={good_sig}&x=1&method=put&&foo&expiry={FUTURE}"
                )),
                Ok(SignedUrl),
            ),
            row(
                "signature for another path",
                put.clone(),
                "private/other.png",
                Some(good_put.clone()),
                Err(SignatureInvalid),
            ),
            row(
                "encoded path signed encoded",
                put.clone(),
                enc,
                Some(format!("expiry={FUTURE}&method=put&signature={sig_enc}")),
                Ok(SignedUrl),
            ),
            row(
                "encoded path signed decoded",
                put.clone(),
                enc,
                Some(format!("expiry={FUTURE}&method=put&signature={sig_dec}")),
                Ok(SignedUrl),
            ),
            row(
                "encoded path, '+' signature",
                put.clone(),
                enc,
                Some(format!("expiry={FUTURE}&method=put&signature={sig_plus}")),
                Err(SignatureInvalid),
            ),
            // Finding 6: one signature, one stored path.
            row(
                "double-encoded path, signature of its decoded form",
                put.clone(),
                "a/cat%2520one.png",
                Some(q("a/cat%20one.png", FUTURE, "put", K1)),
                Err(SignatureInvalid),
            ),
            row(
                "double-encoded path signed as sent",
                put.clone(),
                "a/cat%2520one.png",
                Some(q("a/cat%2520one.png", FUTURE, "put", K1)),
                Ok(SignedUrl),
            ),
            row(
                "literal '%' without hex digits, signed decoded",
                put.clone(),
                "50%25off.png",
                Some(q("50%off.png", FUTURE, "put", K1)),
                Ok(SignedUrl),
            ),
            row(
                "valid signature, invalid path",
                put.clone(),
                "a/../b.png",
                Some(q("a/../b.png", FUTURE, "put", K1)),
                Err(PathInvalid),
            ),
            row(
                "missing method, legacy off",
                put.clone(),
                p,
                Some(format!("expiry={FUTURE}&signature={legacy_sig}")),
                Err(SignatureInvalid),
            ),
            row(
                "missing method, legacy on",
                put.clone(),
                p,
                Some(format!("expiry={FUTURE}&signature={legacy_sig}")),
                Ok(SignedUrl),
            )
            .legacy(),
            row(
                "legacy for GET refused",
                get.clone(),
                p,
                Some(format!(
                    "expiry={FUTURE}&signature={}",
                    signature(K1.as_bytes(), p, FUTURE, None)
                )),
                Err(SignatureInvalid),
            )
            .legacy(),
            row(
                "legacy on, signature with method",
                put.clone(),
                p,
                Some(format!("expiry={FUTURE}&signature={good_sig}")),
                Err(SignatureInvalid),
            )
            .legacy(),
            row(
                "legacy on, expired",
                put.clone(),
                p,
                Some(format!(
                    "expiry={PAST}&signature={}",
                    signature(K1.as_bytes(), p, PAST, None)
                )),
                Err(SignatureExpired),
            )
            .legacy(),
            row(
                "non-UTF-8 expiry",
                put.clone(),
                p,
                Some(format!("expiry=%FF&method=put&signature={good_sig}")),
                Err(SignatureInvalid),
            ),
            row(
                "non-UTF-8 method",
                put.clone(),
                p,
                Some(format!(
                    "expiry={FUTURE}&method=%FF%FE&signature={good_sig}"
                )),
                Err(SignatureInvalid),
            ),
            row(
                "non-UTF-8 signature",
                put.clone(),
                p,
                Some(format!("expiry={FUTURE}&method=put&signature=%FF%FE%C3")),
                Err(SignatureInvalid),
            ),
            row(
                "non-UTF-8 param name ignored",
                put.clone(),
                p,
                Some(format!("%FF%FE=1&{good_put}")),
                Ok(SignedUrl),
            ),
            row(
                "broken percent sequences",
                put.clone(),
                p,
                Some("expiry=%%&method=%G&signature=%".to_owned()),
                Err(SignatureInvalid),
            ),
            row(
                "empty query",
                put.clone(),
                p,
                Some(String::new()),
                Err(TokenMissing),
            ),
            row("no query", put.clone(), p, None, Err(TokenMissing)),
            row(
                "no signature param",
                put.clone(),
                p,
                Some(format!("expiry={FUTURE}&method=put")),
                Err(TokenMissing),
            ),
            row(
                "no credentials on GET",
                get.clone(),
                p,
                None,
                Err(TokenMissing),
            ),
            row("bearer ok", put.clone(), p, None, Ok(Bearer)).auth(hv(&format!("Bearer {K1}"))),
            row("bearer second key", put.clone(), p, None, Ok(Bearer))
                .auth(hv(&format!("Bearer {K2}"))),
            row("bearer lowercase scheme", put.clone(), p, None, Ok(Bearer))
                .auth(hv(&format!("bearer {K1}"))),
            row(
                "bearer uppercase scheme, extra spaces",
                put.clone(),
                p,
                None,
                Ok(Bearer),
            )
            .auth(hv(&format!("BEARER   {K1} "))),
            row("bearer wrong key", put.clone(), p, None, Err(TokenInvalid))
                .auth(hv("Bearer nope")),
            row("bearer key prefix", put.clone(), p, None, Err(TokenInvalid))
                .auth(hv("Bearer primary")),
            row(
                "bearer without token",
                put.clone(),
                p,
                None,
                Err(TokenInvalid),
            )
            .auth(hv("Bearer")),
            row(
                "bearer with blank token",
                put.clone(),
                p,
                None,
                Err(TokenInvalid),
            )
            .auth(hv("Bearer   ")),
            row("basic scheme", put.clone(), p, None, Err(TokenInvalid))
                .auth(hv("Basic dXNlcjpwYXNz")),
            row(
                "empty authorization",
                put.clone(),
                p,
                None,
                Err(TokenInvalid),
            )
            .auth(hv("")),
            row(
                "non-UTF-8 authorization",
                put.clone(),
                p,
                None,
                Err(TokenInvalid),
            )
            .auth(HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap()),
            row(
                "bad bearer beats good signed URL",
                put.clone(),
                p,
                Some(good_put.clone()),
                Err(TokenInvalid),
            )
            .auth(hv("Bearer nope")),
            row(
                "bearer_only: signed URL does not count",
                Method::POST,
                "signatures",
                Some(good_put.clone()),
                Err(TokenMissing),
            )
            .bearer_only(),
            row(
                "bearer_only: bearer ok",
                Method::POST,
                "signatures",
                None,
                Ok(Bearer),
            )
            .bearer_only()
            .auth(hv(&format!("Bearer {K2}"))),
            row(
                "bearer_only: wrong bearer",
                Method::POST,
                "signatures",
                None,
                Err(TokenInvalid),
            )
            .bearer_only()
            .auth(hv("Bearer x")),
        ];
        assert!(rows.len() >= 30);

        let mut failures = Vec::new();
        for r in &rows {
            let verifier = Verifier::new(keys())
                .legacy_signatures(r.legacy)
                .leeway_secs(r.leeway);
            let input = VerifyInput {
                method: &r.method,
                raw_path: &r.path,
                query: r.query.as_deref(),
                authorization: r.auth.as_ref(),
                bearer_only: r.bearer_only,
            };
            let got = verifier.verify(&input, NOW);
            let got_kind = got.as_ref().map(|v| v.via).map_err(|e| e.kind());
            if got_kind != r.want {
                failures.push(format!("{}: got {got:?}, want {:?}", r.name, r.want));
            }
            // Messages depend on the kind only: they tell nothing about the step that failed.
            if let Err(e) = &got {
                let fixed = match e.kind() {
                    ErrorKind::SignatureInvalid => MSG_SIG_INVALID,
                    ErrorKind::SignatureExpired => MSG_SIG_EXPIRED,
                    ErrorKind::TokenInvalid => MSG_TOKEN_INVALID,
                    ErrorKind::TokenMissing if r.bearer_only => MSG_MISSING_BEARER,
                    ErrorKind::TokenMissing => MSG_MISSING,
                    _ => e.message(),
                };
                assert_eq!(e.message(), fixed, "{}", r.name);
                assert!(!e.message().contains(K1) && !e.message().contains(K2));
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn verified_fields() {
        let verifier = Verifier::new(keys()).legacy_signatures(true);
        let sig = signature(K1.as_bytes(), "dir/a%20b.png", FUTURE, Some("get"));
        let query = format!("expiry={FUTURE}&method=get&signature={sig}");
        let v = verifier
            .verify(
                &VerifyInput {
                    method: &Method::HEAD,
                    raw_path: "/dir/a%20b.png",
                    query: Some(&query),
                    authorization: None,
                    bearer_only: false,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(
            v,
            Verified {
                via: Via::SignedUrl,
                path: Some(FilePath::new("dir/a b.png").unwrap()),
                method: Some(SignedMethod::Get),
                expiry: Some(FUTURE),
            }
        );

        let sig = signature(K2.as_bytes(), "x.bin", FUTURE, None);
        let query = format!("signature={sig}&expiry={FUTURE}");
        let v = verifier
            .verify(
                &VerifyInput {
                    method: &Method::PUT,
                    raw_path: "x.bin",
                    query: Some(&query),
                    authorization: None,
                    bearer_only: false,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(v.via, Via::SignedUrl);
        assert_eq!(v.method, None);
        assert_eq!(v.path.unwrap().as_str(), "x.bin");

        let auth = hv(&format!("Bearer {K1}"));
        let v = verifier
            .verify(
                &VerifyInput {
                    method: &Method::PUT,
                    raw_path: "x.bin",
                    query: None,
                    authorization: Some(&auth),
                    bearer_only: false,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(
            v,
            Verified {
                via: Via::Bearer,
                path: None,
                method: None,
                expiry: None
            }
        );
    }

    #[test]
    fn signer_urls_verify() {
        use crate::auth::{ApiKey, Signer};
        let signer = Signer::new(ApiKey::new(K2), "http://localhost:3000/");
        let verifier = Verifier::new(keys());
        for name in ["a.png", "f/é t%.png", "x/y/z?#[].bin", "+plus+.txt"] {
            let path = FilePath::new(name).unwrap();
            let signed = signer.sign(&path, SignedMethod::Put, FUTURE);
            let uri: http::Uri = signed
                .url
                .strip_prefix("http://localhost:3000")
                .unwrap()
                .parse()
                .unwrap();
            let v = verifier
                .verify(
                    &VerifyInput {
                        method: &Method::PUT,
                        raw_path: uri.path(),
                        query: uri.query(),
                        authorization: None,
                        bearer_only: false,
                    },
                    NOW,
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v.path, Some(path));
        }
    }
}
