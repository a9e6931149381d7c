//! The documents of upload sessions: the `POST /uploads` request, the session and part
//! records kept in the storage, the `X-Upload-Index` header, the assembly request, and the
//! Media object answered. Pure parsing, no I/O.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::conditions::Conditions;
use crate::error::{ApiError, ErrorKind};
use crate::file::FileObject;
use crate::path::FilePath;

/// The largest `POST /uploads` body.
pub const MAX_CREATE_BODY: usize = 64 * 1024;
/// The most parts a resumable session can have (indices `0..MAX_PARTS`).
pub const MAX_PARTS: u32 = 10_000;
/// The largest assembly (`POST /store/resumable`) body.
pub const MAX_COMPLETE_BODY: usize = 2 << 20;
/// The most metadata entries, and the longest metadata key.
pub const MAX_METADATA_ENTRIES: usize = 256;
const MAX_METADATA_KEY: usize = 256;

/// A validated `POST /uploads` request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CreateSession {
    /// `/store/resumable` (parts) rather than `/store/single` (one multipart POST).
    pub resumable: bool,
    /// The session's conditions (checked besides the app's).
    pub conditions: Option<Conditions>,
    /// Where the file is published (else `<media id>/original`).
    pub alias: Option<FilePath>,
    /// Flat metadata stored with the file and returned in the Media object.
    pub metadata: Option<Map<String, Value>>,
}

impl CreateSession {
    /// Parses a `POST /uploads` body: empty (every default) or a JSON object
    /// `{resumable?, conditions?, alias?, metadata?}`. Other fields (ittybit's `workflow_id`,
    /// …) are ignored; `null` means absent.
    pub fn parse(body: &[u8]) -> Result<CreateSession, ApiError> {
        if body.trim_ascii().is_empty() {
            return Ok(CreateSession::default());
        }
        if body.len() > MAX_CREATE_BODY {
            return Err(bad(format!(
                "the body is larger than {MAX_CREATE_BODY} bytes"
            )));
        }
        let doc: Value = serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "the body must be a JSON object {{resumable?, conditions?, alias?, metadata?}}: {e}"
            ))
        })?;
        let Value::Object(mut doc) = doc else {
            return Err(bad(
                "the body must be a JSON object {resumable?, conditions?, alias?, metadata?}",
            ));
        };
        let resumable = match doc.remove("resumable") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(bad("`resumable` must be true or false")),
        };
        let conditions = match doc.remove("conditions") {
            None | Some(Value::Null) => None,
            Some(c) => Some(Conditions::from_json(&c).map_err(|e| {
                ApiError::new(ErrorKind::ConditionsInvalid, format!("conditions: {e}"))
            })?),
        };
        let alias = match doc.remove("alias") {
            None | Some(Value::Null) => None,
            Some(Value::String(a)) => Some(parse_alias(&a)?),
            Some(_) => {
                return Err(ApiError::new(
                    ErrorKind::PathInvalid,
                    "`alias` must be a string",
                ));
            }
        };
        let metadata = match doc.remove("metadata") {
            None | Some(Value::Null) => None,
            Some(m) => Some(parse_metadata(m)?),
        };
        Ok(CreateSession {
            resumable,
            conditions,
            alias,
            metadata,
        })
    }
}

fn bad(message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, message)
}

/// An alias is a file path (PROTOCOL §1 rules, a leading `/` tolerated) that does not have
/// the shape of a media URL (`med_…/original`), which would be ambiguous.
fn parse_alias(alias: &str) -> Result<FilePath, ApiError> {
    let path = FilePath::new(alias.strip_prefix('/').unwrap_or(alias)).map_err(|e| {
        ApiError::new(
            ErrorKind::PathInvalid,
            format!("`alias` is not a valid path: {e}"),
        )
    })?;
    if media_id_of(&path).is_some() {
        return Err(ApiError::new(
            ErrorKind::PathInvalid,
            "`alias` cannot have the shape of a media URL (med_…/original)",
        ));
    }
    Ok(path)
}

/// Flat metadata: an object whose values are strings, numbers, booleans or null.
fn parse_metadata(value: Value) -> Result<Map<String, Value>, ApiError> {
    let invalid = |m: String| ApiError::new(ErrorKind::MetadataInvalid, m);
    let Value::Object(map) = value else {
        return Err(invalid("`metadata` must be a JSON object".into()));
    };
    if map.len() > MAX_METADATA_ENTRIES {
        return Err(invalid(format!(
            "`metadata` has more than {MAX_METADATA_ENTRIES} entries"
        )));
    }
    for (k, v) in &map {
        if k.is_empty() || k.len() > MAX_METADATA_KEY {
            return Err(invalid(format!(
                "metadata keys must be 1 to {MAX_METADATA_KEY} bytes long"
            )));
        }
        if matches!(v, Value::Object(_) | Value::Array(_)) {
            return Err(invalid(format!(
                "metadata.{k}: nested objects and arrays are not supported (strings, numbers, booleans and null only)"
            )));
        }
    }
    Ok(map)
}

/// The media id of a `med_<alphanumerics>/original` path.
pub fn media_id_of(path: &FilePath) -> Option<&str> {
    let (id, rest) = path.as_str().split_once('/')?;
    (rest == "original" && is_media_id(id)).then_some(id)
}

fn is_media_id(id: &str) -> bool {
    id.strip_prefix("med_").is_some_and(|r| {
        (8..=64).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// What the storage keeps for a session (`sessions/<id>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub id: String,
    pub resumable: bool,
    #[serde(default)]
    pub conditions: Option<Conditions>,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// Unix seconds.
    pub expiry: u64,
    /// Unix seconds.
    pub created: u64,
}

/// What the storage keeps for an uploaded part (`sessions/<id>/parts/<index>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartRecord {
    /// The storage's upload holding the part's bytes.
    pub upload: String,
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub etag: String,
    /// The name of its hold on the session's budget (`sessions/<id>/held/<name>`).
    #[serde(default)]
    pub hold: Option<String>,
}

/// Where the published file of an aliased media lives (`media/<media id>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MediaRecord {
    pub path: String,
}

/// Parses `X-Upload-Index`: a decimal in `0..MAX_PARTS`.
pub fn parse_index(value: &[u8]) -> Result<u32, ApiError> {
    let invalid = || {
        ApiError::new(
            ErrorKind::PartInvalid,
            format!(
                "X-Upload-Index must be a whole number from 0 to {}",
                MAX_PARTS - 1
            ),
        )
    };
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 5 || !v.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    let n: u32 = std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(invalid)?;
    if n >= MAX_PARTS {
        return Err(invalid());
    }
    Ok(n)
}

/// One listed part of an assembly request.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PartRef {
    /// Its `X-Upload-Index`.
    pub index: u32,
    /// The etag its upload answered.
    pub etag: String,
}

#[derive(Deserialize)]
struct CompleteBody {
    parts: Vec<PartRef>,
}

/// Parses a `POST /store/resumable` body: `{"parts": [{index, etag}, …]}`, sorted by index
/// (duplicates refused). An empty body gives `None`: assemble every uploaded part.
pub fn parse_complete(body: &[u8]) -> Result<Option<Vec<PartRef>>, ApiError> {
    if body.trim_ascii().is_empty() {
        return Ok(None);
    }
    let doc: CompleteBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorKind::PartInvalid,
            format!("the body must be {{\"parts\": [{{\"index\": n, \"etag\": \"…\"}}, …]}}: {e}"),
        )
    })?;
    let mut parts = doc.parts;
    if parts.len() > MAX_PARTS as usize {
        return Err(ApiError::new(
            ErrorKind::PartInvalid,
            format!("more than {MAX_PARTS} parts listed"),
        ));
    }
    parts.sort_by_key(|p| p.index);
    for w in parts.windows(2) {
        if w[0].index == w[1].index {
            return Err(ApiError::new(
                ErrorKind::PartInvalid,
                format!("part {} is listed twice", w[0].index),
            ));
        }
    }
    for p in &mut parts {
        p.etag = p.etag.trim().trim_matches('"').to_owned();
    }
    Ok(Some(parts))
}

/// The Media object (PROTOCOL §7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediaObject {
    /// `med_…`.
    pub id: String,
    /// Always `"media"`.
    pub object: String,
    /// `image`, `video`, `audio` or `other`.
    pub kind: String,
    /// Width in pixels, when known.
    pub width: Option<u32>,
    /// Height in pixels, when known.
    pub height: Option<u32>,
    /// Duration in seconds, when known.
    pub duration: Option<f64>,
    /// Size in bytes.
    pub filesize: u64,
    /// The session's alias, if any.
    pub alias: Option<String>,
    /// `<base>/<alias>`, else `<base>/<media id>/original`.
    pub url: String,
    /// The original file.
    pub sources: Vec<SourceObject>,
    /// The session's metadata (`{}` when none).
    pub metadata: Map<String, Value>,
    /// RFC 3339 UTC.
    pub created: String,
    /// RFC 3339 UTC.
    pub updated: String,
    /// Always `"active"`.
    pub status: String,
}

/// A Source object: the original file of a Media object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceObject {
    /// `src_…`.
    pub id: String,
    /// Always `"source"`.
    pub object: String,
    /// Always `"original"`.
    pub label: String,
    /// `<base>/<media id>/original`.
    pub url: String,
    /// `image`, `video`, `audio` or `other`.
    pub kind: String,
    /// The MIME type.
    pub mimetype: String,
    /// Width in pixels, when known.
    pub width: Option<u32>,
    /// Height in pixels, when known.
    pub height: Option<u32>,
    /// Duration in seconds, when known.
    pub duration: Option<f64>,
    /// Frames per second, when known.
    pub fps: Option<f64>,
    /// Size in bytes.
    pub filesize: u64,
    /// Bits per second, when known.
    pub bitrate: Option<u64>,
}

impl MediaObject {
    /// The Media object of a file published by a session. `file.url` is the media's URL;
    /// `source_url` is `<base>/<media id>/original`.
    pub fn new(file: &FileObject, alias: Option<&str>, source_url: String) -> MediaObject {
        MediaObject {
            id: file.media_id.clone(),
            object: "media".into(),
            kind: file.kind.clone(),
            width: file.width,
            height: file.height,
            duration: file.duration,
            filesize: file.filesize,
            alias: alias.map(str::to_owned),
            url: file.url.clone(),
            sources: vec![SourceObject {
                id: crate::id::random_id("src_"),
                object: "source".into(),
                label: "original".into(),
                url: source_url,
                kind: file.kind.clone(),
                mimetype: file.mime_type.clone(),
                width: file.width,
                height: file.height,
                duration: file.duration,
                fps: file.fps,
                filesize: file.filesize,
                bitrate: file.bitrate,
            }],
            metadata: file.metadata.clone().unwrap_or_default(),
            created: file.created.clone(),
            updated: file.updated.clone(),
            status: "active".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_requests_from_a_table() {
        let ok: &[(&str, bool, Option<&str>, usize)] = &[
            ("", false, None, 0),
            ("  ", false, None, 0),
            ("{}", false, None, 0),
            (r#"{"resumable": true}"#, true, None, 0),
            (
                r#"{"resumable": null, "workflow_id": "wf_1"}"#,
                false,
                None,
                0,
            ),
            (
                r#"{"alias": "usr_abcd/profile/video"}"#,
                false,
                Some("usr_abcd/profile/video"),
                0,
            ),
            (r#"{"alias": "/lead.png"}"#, false, Some("lead.png"), 0),
            (
                r#"{"metadata": {"user_id": "u1", "n": 3, "ok": true, "x": null}}"#,
                false,
                None,
                4,
            ),
        ];
        for (body, resumable, alias, meta) in ok {
            let c = CreateSession::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(c.resumable, *resumable, "{body}");
            assert_eq!(c.alias.as_ref().map(|a| a.as_str()), *alias, "{body}");
            assert_eq!(c.metadata.map_or(0, |m| m.len()), *meta, "{body}");
        }
        let c = CreateSession::parse(
            br#"{"conditions": {"operator": "&&", "rules": [{"key": "kind", "operator": "==", "value": "image"}]}}"#,
        )
        .unwrap();
        assert_eq!(c.conditions.unwrap().rules().len(), 1);

        let bad: &[(&str, &str)] = &[
            ("[]", "bad_request"),
            ("nope", "bad_request"),
            (r#"{"resumable": "yes"}"#, "bad_request"),
            (
                r#"{"conditions": {"rules": [{"key": "colour", "operator": "==", "value": 1}]}}"#,
                "conditions_invalid",
            ),
            (r#"{"conditions": 3}"#, "conditions_invalid"),
            (r#"{"alias": "a/../b"}"#, "path_invalid"),
            (r#"{"alias": ""}"#, "path_invalid"),
            (r#"{"alias": 7}"#, "path_invalid"),
            (r#"{"alias": "med_abcdefgh1234/original"}"#, "path_invalid"),
            (r#"{"metadata": {"a": {"b": 1}}}"#, "metadata_invalid"),
            (r#"{"metadata": {"a": [1]}}"#, "metadata_invalid"),
            (r#"{"metadata": "x"}"#, "metadata_invalid"),
            (r#"{"metadata": {"": 1}}"#, "metadata_invalid"),
        ];
        for (body, kind) in bad {
            let e = CreateSession::parse(body.as_bytes()).unwrap_err();
            assert_eq!(e.kind().as_str(), *kind, "{body}: {e}");
        }
        let huge = format!(
            r#"{{"metadata": {{"a": "{}"}}}}"#,
            "x".repeat(MAX_CREATE_BODY)
        );
        assert_eq!(
            CreateSession::parse(huge.as_bytes()).unwrap_err().kind(),
            ErrorKind::BadRequest
        );
    }

    #[test]
    fn indices_from_a_table() {
        for (v, want) in [("0", Some(0)), (" 7 ", Some(7)), ("9999", Some(9999))] {
            assert_eq!(parse_index(v.as_bytes()).ok(), want, "{v}");
        }
        for v in ["", "-1", "1.5", "10000", "99999999999", "0x1", "1e3", "a"] {
            assert!(parse_index(v.as_bytes()).is_err(), "{v}");
        }
    }

    #[test]
    fn assembly_bodies_from_a_table() {
        assert_eq!(parse_complete(b"").unwrap(), None);
        let parts = parse_complete(
            br#"{"parts": [{"index": 2, "etag": "\"b\""}, {"index": 0, "etag": "a"}]}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            parts,
            vec![
                PartRef {
                    index: 0,
                    etag: "a".into()
                },
                PartRef {
                    index: 2,
                    etag: "b".into()
                }
            ]
        );
        for body in [
            r#"{"parts": [{"index": 1, "etag": "a"}, {"index": 1, "etag": "b"}]}"#,
            r#"{"parts": [{"index": -1, "etag": "a"}]}"#,
            r#"{"parts": [{"index": 0}]}"#,
            r#"{"parts": {}}"#,
            r#"[]"#,
            "x",
        ] {
            assert_eq!(
                parse_complete(body.as_bytes()).unwrap_err().kind(),
                ErrorKind::PartInvalid,
                "{body}"
            );
        }
    }

    #[test]
    fn media_paths() {
        let p = |s: &str| FilePath::new(s).unwrap();
        assert_eq!(
            media_id_of(&p("med_abcdefgh1234/original")),
            Some("med_abcdefgh1234")
        );
        assert_eq!(media_id_of(&p("med_abcdefgh1234/other")), None);
        assert_eq!(media_id_of(&p("x/med_abcdefgh1234/original")), None);
        assert_eq!(media_id_of(&p("med_ab/original")), None);
    }
}
