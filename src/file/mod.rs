//! The File object (PROTOCOL.md §6): what an upload answers and what the storage keeps with
//! every published file.

use rand::Rng;
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
        let now = rfc3339(SystemTime::now());
        FileObject {
            id: random_id("file_"),
            media_id: random_id("med_"),
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
}

/// A random id: `prefix` + 16 characters of `[A-Za-z0-9]`.
pub fn random_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(prefix.len() + 16);
    s.push_str(prefix);
    s.extend((0..16).map(|_| rng.sample(rand::distr::Alphanumeric) as char));
    s
}

/// `t` as RFC 3339 in UTC, to the second (`2025-01-01T01:23:45Z`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_times() {
        let id = random_id("file_");
        assert_eq!(id.len(), 21);
        assert!(id[5..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(random_id("file_"), random_id("file_"));
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_735_689_600);
        assert_eq!(rfc3339(t), "2025-01-01T00:00:00Z");
    }
}
