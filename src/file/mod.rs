//! The File object (PROTOCOL.md §6): what an upload answers and what the storage keeps with
//! every published file.

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

use crate::media::MediaFacts;
use crate::path::FilePath;

/// The File object, with the fields of the ittybit SDK's `File` type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileObject {
    /// `file_` + 16 alphanumerics, new for every published version.
    pub id: String,
    /// `med_` + 16 alphanumerics.
    pub media_id: String,
    /// Always `"source"`.
    pub object: String,
    /// `image`, `video`, `audio`, or `other`.
    pub kind: String,
    /// The MIME type.
    #[serde(rename = "type")]
    pub mime_type: String,
    /// Width in pixels, when known.
    pub width: Option<u32>,
    /// Height in pixels, when known.
    pub height: Option<u32>,
    /// Duration in seconds, when known.
    pub duration: Option<f64>,
    /// Frames per second, when known.
    pub fps: Option<f64>,
    /// Number of frames, when known.
    pub frames: Option<u64>,
    /// Bitrate in bits per second, when known.
    pub bitrate: Option<u64>,
    /// Codec, when known.
    pub codec: Option<String>,
    /// Container format, when known.
    pub container: Option<String>,
    /// Size in bytes.
    pub filesize: u64,
    /// The folder (`null` for a top-level file).
    pub folder: Option<String>,
    /// The filename.
    pub filename: String,
    /// The absolute delivery URL.
    pub url: String,
    /// Metadata attached by the app or an upload session.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// When this version was published (RFC 3339, UTC); a replaced file is a new File.
    pub created: String,
    /// When this version was published (RFC 3339, UTC).
    pub updated: String,
    /// Always `"ready"`.
    pub status: String,
}

impl FileObject {
    /// A File object for bytes published at `path`.
    pub fn new(path: &FilePath, url: String, filesize: u64, facts: &MediaFacts) -> FileObject {
        let ids = (random_id("file_"), random_id("med_"));
        FileObject::with(path, url, filesize, facts, ids, SystemTime::now())
    }

    fn with(
        path: &FilePath,
        url: String,
        filesize: u64,
        facts: &MediaFacts,
        (id, media_id): (String, String),
        created: SystemTime,
    ) -> FileObject {
        let now = rfc3339(created);
        FileObject {
            id,
            media_id,
            object: "source".into(),
            kind: facts.kind.as_str().into(),
            mime_type: facts.mime_type.clone(),
            width: facts.width,
            height: facts.height,
            duration: facts.duration,
            fps: facts.fps,
            frames: facts.frames,
            bitrate: facts.bitrate,
            codec: facts.codec.clone(),
            container: facts.container.clone(),
            filesize,
            folder: path.folder().map(str::to_owned),
            filename: path.filename().to_owned(),
            url,
            metadata: None,
            created: now.clone(),
            updated: now,
            status: "ready".into(),
        }
    }

    /// The File object of a version published without a stored one (see
    /// [`Capabilities::stable_meta`](crate::storage::Capabilities::stable_meta)): ids derived from the
    /// path and the version's etag ([`version_id`]), `created` and `updated` from the
    /// version's `modified`, the rest from `facts`. The same version always gives the same
    /// object.
    pub fn of_version(
        path: &FilePath,
        url: String,
        meta: &crate::storage::ObjectMeta,
        facts: &MediaFacts,
    ) -> FileObject {
        let ids = (
            version_id("file_", path, &meta.etag),
            version_id("med_", path, &meta.etag),
        );
        FileObject::with(path, url, meta.size, facts, ids, meta.modified)
    }
}

#[doc(hidden)]
pub use crate::id::{random_id, version_id};

/// `t` as RFC 3339 in UTC, to the second (`2025-01-01T01:23:45Z`).
#[doc(hidden)]
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character of a random id is uniform over the 62: a plain `byte % 62` would make
    /// the first eight a quarter more frequent than the rest.
    #[test]
    fn random_ids_are_uniform() {
        use crate::id::ALPHABET;
        let mut counts = [0u32; 256];
        for _ in 0..20_000 {
            for b in random_id("").bytes() {
                counts[usize::from(b)] += 1;
            }
        }
        let expected = 20_000.0 * 16.0 / 62.0;
        for &c in ALPHABET {
            let n = f64::from(counts[usize::from(c)]);
            assert!(
                (n / expected - 1.0).abs() < 0.1,
                "{}: {n} vs {expected}",
                c as char
            );
        }
        let total: u32 = counts.iter().sum();
        assert_eq!(total, 20_000 * 16);
    }

    #[test]
    fn ids_and_times() {
        let id = random_id("file_");
        assert_eq!(id.len(), 21);
        assert!(id[5..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(random_id("file_"), random_id("file_"));
        let (a, b) = (
            FilePath::new("a/b.png").unwrap(),
            FilePath::new("a/c.png").unwrap(),
        );
        let id = version_id("file_", &a, "e1");
        assert_eq!((id.len(), &id[..5]), (21, "file_"));
        assert!(id[5..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(
            id,
            version_id("file_", &a, "e1"),
            "the same version, the same id"
        );
        assert_ne!(id, version_id("file_", &a, "e2"), "another version");
        assert_ne!(id, version_id("file_", &b, "e1"), "another path");
        assert_ne!(id[5..], version_id("med_", &a, "e1")[4..], "another prefix");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_735_689_600);
        assert_eq!(rfc3339(t), "2025-01-01T00:00:00Z");
    }
}
