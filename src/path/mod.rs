//! File paths: `folder/…/filename`, validated once at the edge (PROTOCOL.md §1).
//!
//! A [`FilePath`] is the percent-decoded path of a request after the mount prefix, without the
//! leading `/`. Construction is the only validation: a value of this type is never empty,
//! never ends in `/`, has no empty, `.` or `..` segment, no `\`, NUL or other control
//! character, is valid UTF-8 and at most [`MAX_PATH_BYTES`] long. A storage can therefore
//! join it under its root without ever reaching outside it.
//!
//! ```
//! use tower_uploads::path::FilePath;
//!
//! let p = FilePath::from_uri_path("photos/2025/cat%20one.png").unwrap();
//! assert_eq!(p.as_str(), "photos/2025/cat one.png");
//! assert_eq!(p.folder(), Some("photos/2025"));
//! assert_eq!(p.filename(), "cat one.png");
//! assert_eq!(p.to_uri_path(), "photos/2025/cat%20one.png");
//! assert!(FilePath::from_uri_path("a/../b").is_err());
//! ```

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use std::fmt;

/// The longest accepted path, in bytes, after percent-decoding.
pub const MAX_PATH_BYTES: usize = 1024;

/// Why a path was refused (all answered 400 `path_invalid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is empty.
    #[error("the path is empty")]
    Empty,
    /// The path ends in `/` (a folder, not a file).
    #[error("the path ends in '/': name a file, not a folder")]
    TrailingSlash,
    /// A segment is empty (`a//b`), `.` or `..`.
    #[error("the path has an empty, '.' or '..' segment")]
    BadSegment,
    /// A `\`, NUL or other control character.
    #[error("the path contains a backslash or a control character")]
    BadCharacter,
    /// The decoded bytes are not UTF-8.
    #[error("the path is not valid UTF-8 once percent-decoded")]
    NotUtf8,
    /// Longer than [`MAX_PATH_BYTES`].
    #[error("the path is longer than 1024 bytes")]
    TooLong,
}

/// A validated, percent-decoded file path (`folder/…/filename`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilePath(String);

/// Characters escaped in a path segment of a URL this crate makes.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

impl FilePath {
    /// Validates the path of a request URI (after the mount prefix; one leading `/` is
    /// ignored), percent-decoding it first.
    pub fn from_uri_path(raw: &str) -> Result<FilePath, PathError> {
        let raw = raw.strip_prefix('/').unwrap_or(raw);
        if raw.len() > 3 * MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| PathError::NotUtf8)?;
        FilePath::new(decoded.into_owned())
    }

    /// Validates an already-decoded path.
    pub fn new(s: impl Into<String>) -> Result<FilePath, PathError> {
        let s = s.into();
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        let bad_char = if s.is_ascii() {
            s.bytes().any(|b| b == b'\\' || b.is_ascii_control())
        } else {
            s.chars().any(|c| c == '\\' || c.is_control())
        };
        if bad_char {
            return Err(PathError::BadCharacter);
        }
        if s.ends_with('/') {
            return Err(PathError::TrailingSlash);
        }
        if s.split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(PathError::BadSegment);
        }
        Ok(FilePath(s))
    }

    /// Joins a folder (may be empty) and a filename, then validates.
    pub fn from_parts(folder: Option<&str>, filename: &str) -> Result<FilePath, PathError> {
        match folder
            .map(|f| f.trim_matches('/'))
            .filter(|f| !f.is_empty())
        {
            Some(folder) => FilePath::new(format!("{folder}/{filename}")),
            None => FilePath::new(filename),
        }
    }

    /// The decoded path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Everything before the last `/`, or `None` for a top-level file.
    pub fn folder(&self) -> Option<&str> {
        self.0.rsplit_once('/').map(|(folder, _)| folder)
    }

    /// The last segment.
    pub fn filename(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, name)| name)
    }

    /// The segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The path as it appears in a URL this crate makes: each segment percent-encoded, no
    /// leading `/`. Signed URLs sign exactly this string.
    pub fn to_uri_path(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 8);
        for (i, seg) in self.segments().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.extend(utf8_percent_encode(seg, SEGMENT));
        }
        out
    }
}

impl fmt::Display for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for FilePath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The MIME type that `filename`'s extension gives ([`mime_guess`]'s first), if any.
///
/// The last answer is remembered per thread: uploads come in runs of one extension, and a
/// small upload asks twice (its sniffing, then FsStorage's publication). mime_guess's
/// case-insensitive search of its table was ~1 % of a small upload's server time.
pub(crate) fn type_by_name(filename: &str) -> Option<&'static str> {
    use std::cell::Cell;
    /// The extensions remembered: up to this many bytes.
    const MAX_EXT: usize = 15;
    thread_local! {
        static LAST: Cell<([u8; MAX_EXT], u8, Option<&'static str>)> =
            const { Cell::new(([0; MAX_EXT], u8::MAX, None)) };
    }
    // As `Path::extension`: after the last dot, unless the name starts with its only dot.
    let (stem, ext) = filename.rsplit_once('.')?;
    if stem.is_empty() {
        return None;
    }
    let guess = || mime_guess::from_ext(ext).first_raw();
    if ext.len() > MAX_EXT {
        return guess();
    }
    let (bytes, len, answer) = LAST.get();
    if usize::from(len) == ext.len() && &bytes[..ext.len()] == ext.as_bytes() {
        return answer;
    }
    let answer = guess();
    let mut bytes = [0; MAX_EXT];
    bytes[..ext.len()].copy_from_slice(ext.as_bytes());
    LAST.set((bytes, ext.len() as u8, answer));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_paths() {
        let cases = [
            ("image.png", "image.png", None, "image.png"),
            ("/image.png", "image.png", None, "image.png"),
            ("a/b/c.txt", "a/b/c.txt", Some("a/b"), "c.txt"),
            ("a%20b/c%2Fd", "a b/c/d", Some("a b/c"), "d"),
            ("%C3%A9t%C3%A9.jpg", "été.jpg", None, "été.jpg"),
            (".hidden", ".hidden", None, ".hidden"),
            ("..a/b..", "..a/b..", Some("..a"), "b.."),
            ("a/...", "a/...", Some("a"), "..."),
        ];
        for (raw, path, folder, name) in cases {
            let p = FilePath::from_uri_path(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(p.as_str(), path, "{raw}");
            assert_eq!(p.folder(), folder, "{raw}");
            assert_eq!(p.filename(), name, "{raw}");
            // Round trip through the URL form.
            assert_eq!(FilePath::from_uri_path(&p.to_uri_path()).unwrap(), p);
        }
    }

    #[test]
    fn hostile_paths() {
        use PathError::*;
        let long = "a".repeat(1025);
        let long_encoded = "%61".repeat(1025);
        let cases: &[(&str, PathError)] = &[
            ("", Empty),
            ("/", Empty),
            ("a/", TrailingSlash),
            ("a//b", BadSegment),
            ("//etc/passwd", BadSegment),
            ("../etc/passwd", BadSegment),
            ("a/../../b", BadSegment),
            ("a/./b", BadSegment),
            (".", BadSegment),
            ("..", BadSegment),
            ("%2e%2e/x", BadSegment),
            ("%2E%2E%2Fx", BadSegment),
            ("a%2F%2Fb", BadSegment),
            ("a%2F", TrailingSlash),
            ("a\\b", BadCharacter),
            ("a%5Cb", BadCharacter),
            ("..%5C..%5Cwin.ini", BadCharacter),
            ("a%00b", BadCharacter),
            ("a%0Ab", BadCharacter),
            ("a%7Fb", BadCharacter),
            ("a%C2%85b", BadCharacter),
            ("a%FFb", NotUtf8),
            ("%C3", NotUtf8),
            (&long, TooLong),
            (&long_encoded, TooLong),
        ];
        for (raw, want) in cases {
            assert_eq!(FilePath::from_uri_path(raw), Err(*want), "{raw:?}");
        }
        assert!(FilePath::from_uri_path(&"a".repeat(1024)).is_ok());
    }

    #[test]
    fn parts() {
        assert_eq!(
            FilePath::from_parts(None, "x.png").unwrap().as_str(),
            "x.png"
        );
        assert_eq!(
            FilePath::from_parts(Some(""), "x.png").unwrap().as_str(),
            "x.png"
        );
        assert_eq!(
            FilePath::from_parts(Some("/a/b/"), "x.png")
                .unwrap()
                .as_str(),
            "a/b/x.png"
        );
        assert!(FilePath::from_parts(Some("a"), "../x").is_err());
        assert!(FilePath::from_parts(Some("a"), "").is_err());
    }
}
