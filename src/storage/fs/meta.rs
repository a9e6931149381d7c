//! A published version's record (its content type and attributes): the encoding, the
//! `user.tower-uploads.record` extended attribute, the record files under `meta/`, the etag,
//! and the [`ObjectMeta`] read from them.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::{Inner, hex_string, path_key};
use crate::path::FilePath;
use crate::storage::ObjectMeta;

/// The extended attribute holding a published version's record.
pub(super) const RECORD_XATTR: &str = "user.tower-uploads.record";

/// A published version's record, as first written (JSON); still read, no longer written.
#[derive(serde::Deserialize)]
struct MetaFile {
    content_type: String,
    #[serde(with = "attributes_b64")]
    attributes: Bytes,
}

/// The tag that starts a record in the current format: `tu1\n<content type>\n<attributes>`
/// (the attributes verbatim: no JSON escaping, no base64, one copy).
const META_TAG: &[u8] = b"tu1\n";

/// Encodes a published version's content type and attributes.
pub(super) fn encode_meta(content_type: &str, attributes: &[u8]) -> Vec<u8> {
    // A content type never holds a line break (`Storage::publish_upload` callers pass a MIME type);
    // one that did would be cut at it on reading, so it is dropped from there on.
    let content_type = content_type.split(['\n', '\r']).next().unwrap_or("");
    let mut out = Vec::with_capacity(META_TAG.len() + content_type.len() + 1 + attributes.len());
    out.extend_from_slice(META_TAG);
    out.extend_from_slice(content_type.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(attributes);
    out
}

/// Decodes a record written by [`encode_meta`] (or by an earlier version, as JSON).
fn decode_meta(bytes: &[u8]) -> Option<(String, Bytes)> {
    match bytes.strip_prefix(META_TAG) {
        Some(rest) => {
            let at = rest.iter().position(|&b| b == b'\n')?;
            let content_type = std::str::from_utf8(&rest[..at]).ok()?.to_owned();
            Some((content_type, Bytes::copy_from_slice(&rest[at + 1..])))
        }
        None => serde_json::from_slice::<MetaFile>(bytes)
            .ok()
            .map(|m| (m.content_type, m.attributes)),
    }
}

mod attributes_b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(text) = s.strip_prefix("t:") {
            Ok(Bytes::from(text.to_owned()))
        } else if let Some(b64) = s.strip_prefix("b:") {
            STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(serde::de::Error::custom)
        } else {
            Err(serde::de::Error::custom("bad attributes"))
        }
    }
}

/// The content type `head` gives a file without a record: from its name's extension, else
/// `application/octet-stream`.
pub(super) fn guessed_type(path: &FilePath) -> &'static str {
    crate::path::type_by_name(path.filename()).unwrap_or("application/octet-stream")
}

pub(super) fn etag_of(md: &fs::Metadata) -> String {
    let mut h = Sha256::new();
    for n in [
        md.dev(),
        md.ino(),
        md.size(),
        md.mtime() as u64,
        md.mtime_nsec() as u64,
    ] {
        h.update(n.to_le_bytes());
    }
    hex_string(&h.finalize()[..12])
}

/// Whether any record file exists under `<sys>/meta/` (unreadable counts as yes).
pub(super) fn any_meta_file(sys: &Path) -> bool {
    let Ok(shards) = fs::read_dir(sys.join("meta")) else {
        return true;
    };
    shards.into_iter().any(|shard| match shard {
        Ok(shard) => fs::read_dir(shard.path()).map_or(true, |mut d| d.next().is_some()),
        Err(_) => true,
    })
}

impl Inner {
    /// The record of version `etag` of the file whose path hashes to `key`:
    /// `meta/<first two hex digits>/<key>.<etag>.json` (the 256 shards exist from the start).
    pub(super) fn meta_file(&self, key: &str, etag: &str) -> PathBuf {
        self.sys()
            .join("meta")
            .join(&key[..2])
            .join(format!("{key}.{etag}.json"))
    }

    fn read_meta(&self, key: &str, etag: &str) -> (String, Bytes) {
        fs::read(self.meta_file(key, etag))
            .ok()
            .and_then(|b| decode_meta(&b))
            .unwrap_or_else(|| (String::from("application/octet-stream"), Bytes::new()))
    }

    /// The meta of the version `file` is open on: its record from the file's extended
    /// attribute (same inode, so always this version's), else from the record file.
    pub(super) fn object_meta(
        &self,
        path: &FilePath,
        file: &File,
        md: &fs::Metadata,
    ) -> ObjectMeta {
        let etag = etag_of(md);
        let from_xattr = match xattr::FileExt::get_xattr(file, RECORD_XATTR) {
            Ok(Some(bytes)) => decode_meta(&bytes),
            _ => None,
        };
        let (mut content_type, attributes) = match from_xattr {
            Some(m) => m,
            None => self.read_meta(&path_key(path), &etag),
        };
        if attributes.is_empty() && content_type == "application/octet-stream" {
            // A file put there by other means, or published without a record (see
            // `publish`): the type from the name.
            content_type = guessed_type(path).to_owned();
        }
        ObjectMeta {
            size: md.size(),
            etag,
            modified: md.modified().unwrap_or(UNIX_EPOCH),
            content_type,
            attributes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_records_round_trip_and_read_the_old_format() {
        let cases: &[(&str, &[u8], &str, &[u8])] = &[
            ("image/png", b"{\"a\":1}", "image/png", b"{\"a\":1}"),
            ("", b"", "", b""),
            (
                "text/plain",
                b"line\nbreaks\n\xff\x00",
                "text/plain",
                b"line\nbreaks\n\xff\x00",
            ),
            ("bad\ntype", b"x", "bad", b"x"),
        ];
        for (ct, attrs, want_ct, want_attrs) in cases {
            let (got_ct, got_attrs) = decode_meta(&encode_meta(ct, attrs)).unwrap();
            assert_eq!(
                (got_ct.as_str(), &got_attrs[..]),
                (*want_ct, *want_attrs),
                "{ct:?}"
            );
        }
        // Records written by earlier versions (JSON, attributes as text or base64).
        let old = br#"{"content_type":"image/gif","attributes":"t:{\"k\":2}"}"#;
        assert_eq!(
            decode_meta(old),
            Some(("image/gif".to_owned(), Bytes::from_static(b"{\"k\":2}")))
        );
        let old_b64 = br#"{"content_type":"a/b","attributes":"b:/wA="}"#;
        assert_eq!(
            decode_meta(old_b64),
            Some(("a/b".to_owned(), Bytes::from_static(b"\xff\x00")))
        );
        for garbage in [&b"tu1\nno-line-break"[..], b"", b"{", b"tu1"] {
            assert_eq!(decode_meta(garbage), None, "{garbage:?}");
        }
    }
}
