//! The route table: what a request under the mount prefix is. The one place that knows the
//! endpoints' paths and methods; the signature layer (what to check), the conditions layer
//! (whether a request declares a file size) and the upload handler (what to run) all read
//! it, so that they cannot disagree about a request.

use http::Method;
use percent_encoding::percent_decode_str;

/// What a request is, from its method and its path after the mount prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint<'a> {
    /// `POST /signatures`.
    Signatures,
    /// `POST /uploads`: a new upload session.
    CreateSession,
    /// `POST /store/single?key=`: a session's single-file form.
    SessionSingle,
    /// `PUT /store/resumable?key=`: a session's indexed part.
    SessionPart,
    /// `POST /store/resumable?key=`: a session's assembly.
    SessionComplete,
    /// `PUT <file>`: a simple upload or a chunk; the path after the prefix as sent (still
    /// percent-encoded, with its leading `/`), for [`FilePath::from_uri_path`](crate::path::FilePath::from_uri_path).
    Upload(&'a str),
    /// `GET`/`HEAD <file>`: delivery; the path as for [`Endpoint::Upload`].
    Deliver(&'a str),
    /// `POST /tus`: a new tus upload (PROTOCOL.md §9).
    TusCreate,
    /// `OPTIONS /tus` (or `/tus/<id>`): what the tus endpoint serves.
    TusOptions,
    /// `HEAD`, `PATCH` or `DELETE /tus/<id>`: a tus upload; its id (not a file path: `HEAD`
    /// of a file under `tus/` is not served, `GET` is).
    TusUpload(&'a str),
    /// A `POST` that is not one of ours as sent, but names `signatures` or `uploads` once
    /// percent-decoded or with a trailing `/`: not served here, but an inner service might
    /// read it as the endpoint, so it is checked like one (a bearer key).
    LooksLikeAdmin,
    /// Any other `POST`, or any other method.
    Other,
}

impl Endpoint<'_> {
    /// Reads `method` on `rest`, the path after the mount prefix (with its leading `/`, or
    /// empty).
    pub(crate) fn of<'a>(method: &Method, rest: &'a str) -> Endpoint<'a> {
        let raw = rest.strip_prefix('/').unwrap_or(rest);
        if let Some(tus) = tus_of(method, raw) {
            return tus;
        }
        if *method == Method::POST {
            return match raw {
                "signatures" => Endpoint::Signatures,
                "uploads" => Endpoint::CreateSession,
                "store/single" => Endpoint::SessionSingle,
                "store/resumable" => Endpoint::SessionComplete,
                _ => {
                    let decoded = percent_decode_str(raw).decode_utf8_lossy();
                    let name = decoded.trim_matches('/');
                    if name == "signatures" || name == "uploads" {
                        Endpoint::LooksLikeAdmin
                    } else {
                        Endpoint::Other
                    }
                }
            };
        }
        if *method == Method::PUT {
            return if raw == "store/resumable" {
                Endpoint::SessionPart
            } else {
                Endpoint::Upload(rest)
            };
        }
        if *method == Method::GET || *method == Method::HEAD {
            return Endpoint::Deliver(rest);
        }
        Endpoint::Other
    }

    /// An endpoint of upload sessions, whose `?key=` the endpoint itself checks.
    pub(crate) fn is_session_key_endpoint(self) -> bool {
        matches!(
            self,
            Endpoint::SessionSingle | Endpoint::SessionPart | Endpoint::SessionComplete
        )
    }
}

/// The tus endpoint's requests: `POST`/`OPTIONS /tus`, `HEAD`/`PATCH`/`DELETE`/`OPTIONS
/// /tus/<id>` (an id of ASCII letters and digits).
fn tus_of<'a>(method: &Method, raw: &'a str) -> Option<Endpoint<'a>> {
    if raw == "tus" {
        return match *method {
            Method::POST => Some(Endpoint::TusCreate),
            Method::OPTIONS => Some(Endpoint::TusOptions),
            _ => None,
        };
    }
    let id = raw.strip_prefix("tus/")?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match *method {
        Method::HEAD | Method::PATCH | Method::DELETE => Some(Endpoint::TusUpload(id)),
        Method::OPTIONS => Some(Endpoint::TusOptions),
        _ => None,
    }
}

/// The path after `prefix` (with its leading `/`, or empty), if `path` is under it.
/// `prefix` is normalized ([`normalize_prefix`]).
pub(crate) fn strip_prefix<'p>(prefix: &str, path: &'p str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Normalizes a mount prefix: a leading `/`, no trailing `/`, or `""` for the root.
pub(crate) fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use Endpoint::*;
        let rows: &[(&str, &str, Endpoint)] = &[
            ("POST", "/signatures", Signatures),
            ("POST", "/uploads", CreateSession),
            ("POST", "/store/single", SessionSingle),
            ("POST", "/store/resumable", SessionComplete),
            ("PUT", "/store/resumable", SessionPart),
            // A session endpoint only as sent: anything else is a file.
            ("PUT", "/store/single", Upload("/store/single")),
            ("PUT", "/store/resumable/", Upload("/store/resumable/")),
            ("PUT", "/store/%72esumable", Upload("/store/%72esumable")),
            ("POST", "/store/%72esumable", Other),
            ("POST", "/a/store/resumable", Other),
            // Disguised admin endpoints are checked as such, never served.
            ("POST", "/%73ignatures", LooksLikeAdmin),
            ("POST", "/signatures/", LooksLikeAdmin),
            ("POST", "/uploads/", LooksLikeAdmin),
            ("POST", "/%75ploads", LooksLikeAdmin),
            ("POST", "//signatures", LooksLikeAdmin),
            ("POST", "/signaturesx", Other),
            ("POST", "/a.png", Other),
            ("PUT", "/a/b.png", Upload("/a/b.png")),
            ("PUT", "/signatures", Upload("/signatures")),
            ("PUT", "", Upload("")),
            ("GET", "/a/b.png", Deliver("/a/b.png")),
            ("HEAD", "/store/single", Deliver("/store/single")),
            ("GET", "/signatures", Deliver("/signatures")),
            ("DELETE", "/a.png", Other),
            // tus (PROTOCOL.md §9).
            ("POST", "/tus", TusCreate),
            ("OPTIONS", "/tus", TusOptions),
            ("HEAD", "/tus/t1abc", TusUpload("t1abc")),
            ("PATCH", "/tus/t1abc", TusUpload("t1abc")),
            ("DELETE", "/tus/t1abc", TusUpload("t1abc")),
            ("OPTIONS", "/tus/t1abc", TusOptions),
            ("GET", "/tus/t1abc", Deliver("/tus/t1abc")),
            ("PUT", "/tus", Upload("/tus")),
            ("HEAD", "/tus/a.png", Deliver("/tus/a.png")),
            ("PATCH", "/tus/a/b", Other),
            ("POST", "/tus/", Other),
            ("PATCH", "/a.png", Other),
            ("OPTIONS", "/signatures", Other),
        ];
        for (method, rest, want) in rows {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(Endpoint::of(&method, rest), *want, "{method} {rest}");
        }
    }

    #[test]
    fn prefixes() {
        for (prefix, want) in [
            ("", ""),
            ("/", ""),
            ("files", "/files"),
            ("/files/", "/files"),
            ("/a/b", "/a/b"),
        ] {
            assert_eq!(normalize_prefix(prefix), want, "{prefix}");
        }
        for (prefix, path, want) in [
            ("", "/a.png", Some("/a.png")),
            ("/files", "/files/a.png", Some("/a.png")),
            ("/files", "/files", Some("")),
            ("/files", "/filesx/a.png", None),
            ("/files", "/other/a.png", None),
        ] {
            assert_eq!(strip_prefix(prefix, path), want, "{prefix} {path}");
        }
    }
}
