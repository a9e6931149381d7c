//! Media facts from a file's first bytes: `kind`, MIME `type`, and image dimensions.
//! (PROTOCOL.md §3: magic bytes decide; a hint never makes a file media.) See [`sniff()`].

#[doc(hidden)]
pub mod probe;
mod sniff;
mod source;
#[doc(hidden)]
pub use probe::probe;
pub use sniff::*;
pub use source::MAX_PROBE_READ;
#[doc(hidden)]
pub use source::{MemorySource, Source, UploadSource};

/// What a file is, as far as its bytes show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A still or animated image.
    Image,
    /// A video.
    Video,
    /// Audio.
    Audio,
    /// Anything else.
    Other,
}

impl Kind {
    /// `image`, `video`, `audio` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Video => "video",
            Kind::Audio => "audio",
            Kind::Other => "other",
        }
    }
}

/// The facts of the File object that come from the bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaFacts {
    /// The kind.
    pub kind: Kind,
    /// The MIME type.
    pub mime_type: String,
    /// Width in pixels.
    pub width: Option<u32>,
    /// Height in pixels.
    pub height: Option<u32>,
    /// Duration in seconds.
    pub duration: Option<f64>,
    /// Frames per second.
    pub fps: Option<f64>,
    /// Frame count.
    pub frames: Option<u64>,
    /// Bits per second.
    pub bitrate: Option<u64>,
    /// Codec.
    pub codec: Option<String>,
    /// Container.
    pub container: Option<String>,
    /// True when the bytes were recognised (magic numbers) and decided `kind` and
    /// `mime_type`; false when the type came from the hint, the extension or the default
    /// (then `kind` is [`Kind::Other`], and conditions see `application/octet-stream`:
    /// [`mime_for_conditions`]).
    pub recognised: bool,
}
