//! Probing: the [`MediaFacts`] of a stored file from a few bounded ranged reads — never the
//! whole file. See [`probe()`].
//!
//! [`probe`] reads the first [`SNIFF_BYTES`], lets [`sniff`] decide `kind`, `type` and image
//! dimensions, then hands the file to the parser of its format, which reads only the
//! headers it needs (an MP4's `moov` wherever it sits, the last Ogg page, a Matroska
//! `Info`/`Tracks` element…) and fills `duration`, `fps`, `frames`, `bitrate`, `codec` and
//! `container`, plus `width`/`height` for video.
//!
//! # What each format gives
//!
//! | type | width × height | duration | fps | frames | codec | container |
//! |---|---|---|---|---|---|---|
//! | MP4, MOV, M4V, M4A | video sample entry | `mvhd` (else `mehd`, the fragments, the longest track) | `mdhd` timescale ÷ the commonest `stts` delta | video `stsz` count | video track's, else audio's | `mp4`, `mov`, `m4a`, `m4v`, `3gp`, `3g2` (from the `ftyp` brand) |
//! | WebM, Matroska | `PixelWidth`/`PixelHeight` | `Info` `Duration` × `TimestampScale` | 10⁹ ÷ `DefaultDuration` | — (only the clusters know) | from `CodecID` | `webm`, `matroska` (the `DocType`) |
//! | MP3 (MPEG audio) | — | Xing/Info/VBRI frame count × samples per frame ÷ rate; CBR: audio bytes ÷ bitrate | — | — | `mp3` (`mp2`, `mp1`) | `mp3` |
//! | WAV | — | `data` size ÷ byte rate | — | — | `pcm_s16le`, `pcm_f32le`, … from the format tag | `wav` |
//! | FLAC | — | `STREAMINFO` samples ÷ rate | — | — | `flac` | `flac` |
//! | Ogg | Theora picture | last page's granule position (Opus: minus pre-skip) | Theora only | — | `vorbis`, `opus`, `flac`, `speex`, `theora` | `ogg` |
//! | GIF | sniff | sum of the Graphic Control Extensions' delays (as ffprobe) | frames ÷ duration | image descriptors | `gif` | `gif` |
//! | WebP | sniff (canvas) | animated: sum of `ANMF` durations | frames ÷ duration | `ANMF` count | `webp` | `webp` |
//! | PNG, JPEG, BMP, TIFF, AVIF, HEIF, SVG | sniff (JPEG and TIFF: found by a bounded walk when beyond the head) | — | — | — | `png`, `mjpeg`, `bmp`, `tiff`, `av1`, `hevc` | `png`, `jpeg`, `bmp`, `tiff`, `avif`, `heif`, `svg` |
//!
//! Units: `duration` in seconds, `fps` in frames per second (a rate within 0.01 % of an
//! integer or of an NTSC rate `n × 1000/1001` is snapped to it), `frames` a count,
//! `bitrate` in bits per second. `bitrate` is always the overall rate, `filesize × 8 ÷
//! duration` (as ffprobe's `format.bit_rate`), for every file with a duration: the rates
//! that some headers state describe one stream, not the file. `codec` uses ffprobe's
//! `codec_name` spelling, for the video stream when there is one, else the first audio
//! stream. A container whose streams show no video but audio (an `.m4a` written with an
//! `mp4` brand, an audio-only WebM from a browser's `MediaRecorder`, a Matroska `.mka`) is
//! reported as kind `audio` with type `audio/mp4` / `audio/webm` / `audio/x-matroska`; an Ogg
//! file with a Theora stream as kind `video`, type `video/ogg`. A Matroska file's type
//! follows its `DocType` (`infer`, and so [`sniff`], calls every EBML file `video/webm`):
//! `video/x-matroska` unless the `DocType` is `webm`. Nothing else changes the `kind` or
//! `type` that [`sniff`] found.
//!
//! # Bounds
//!
//! One probe reads at most [`PROBE_BUDGET`] bytes (`2 × MAX_PROBE_READ + SNIFF_BYTES`,
//! 32 MiB + 64 KiB) in at most [`MAX_PROBE_READS`] reads, each at most [`MAX_PROBE_READ`];
//! typical files cost the head plus a few small reads. What each format reads:
//! - MP4: the head, 16 bytes per top-level box header past it, then the `moov` box
//!   (refused above 16 MiB); a fragmented file without a stated duration also reads its
//!   `moof` boxes (each at most 1 MiB; at most 1024 top-level boxes are walked) while the
//!   budget lasts.
//! - Matroska: the head; `Info` and `Tracks` by range (via the `SeekHead`) when they are
//!   not in it.
//! - Ogg: the head and the last 64 KiB (1 MiB when no page ends there).
//! - MP3: the head, and 4 KiB after an ID3v2 tag larger than the head.
//! - WAV, WebP: chunk headers past the head, 4 KiB per read.
//! - Still images: the head; past it, a JPEG's segment headers or a TIFF's first directory
//!   (4 KiB per read), or the first MiB of a HEIF/AVIF whose `meta` box is not in the head.
//! - GIF: the frames have to be walked: at most the first 16 MiB ([`GIF_WALK_LIMIT`]); a
//!   longer GIF gets no `frames` or `duration`.
//!
//! The work is bounded too, by the bytes read: every count that a file states (samples,
//! entries, pages, blocks…) is checked against the bytes that would have to carry it, or
//! its sum computed rather than counted out (an MP4 `trun` without per-sample fields states
//! up to 2³² − 1 samples in 16 bytes), so a probe does at most `4 × bytes read + 4096`
//! steps of work ([`ProbeStats::work`]), and never more than [`MAX_PROBE_WORK`] steps or
//! [`PROBE_TIME`] of work (time spent waiting for the storage not counted): past either,
//! the parser stops and the facts stay partial.
//!
//! A read that fails, a budget that runs out or a header that makes no sense never fails
//! the probe: the facts are then [`sniff`]'s (kind and type from the magic bytes), and the
//! fields a parser could not establish stay `None`. The probe never panics.

mod bits;
mod flac;
mod gif;
mod image;
mod mkv;
mod mp3;
mod mp4;
mod ogg;
mod reader;
mod wav;
mod webp;

use super::{Kind, MAX_PROBE_READ, MediaFacts, SNIFF_BYTES, Source, sniff};
use reader::Reader;
use std::time::Duration;

/// The most bytes one [`probe`] reads, in all: two maximal reads ([`MAX_PROBE_READ`]) and
/// the head ([`SNIFF_BYTES`]).
pub const PROBE_BUDGET: u64 = 2 * MAX_PROBE_READ + SNIFF_BYTES as u64;

/// The most reads one [`probe`] makes.
pub const MAX_PROBE_READS: u32 = 4096;

/// The most steps of work one [`probe`] does: a step is a read asked of the reader, a loop
/// turn of a parser, or a byte decoded in memory. Every parser's work is bounded by the
/// bytes it read (see [`ProbeStats::work`]); this caps it anyway.
pub const MAX_PROBE_WORK: u64 = 4 * PROBE_BUDGET;

/// The most time one [`probe`] works, not counting its waits for the storage: past it, the
/// parser stops and the facts stay partial (those it had found, else [`sniff`]'s). Typical
/// files take well under a millisecond of it. It is checked between steps, so a probe may
/// overrun it by one step: the longest is decoding the largest `moov` read (16 MiB),
/// ~0.4 s in a debug build (`tests/probe_work.rs`). It is wall-clock time: probes that
/// share a busy CPU get less done within it.
pub const PROBE_TIME: Duration = Duration::from_millis(300);

/// What a [`probe`] cost ([`probe_with_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProbeStats {
    /// Bytes read from the source (the head included).
    pub bytes_read: u64,
    /// Reads made.
    pub reads: u32,
    /// Steps of work: one per read asked of the reader (served from memory or not), one per
    /// byte handed to an in-memory decoder (the head to [`sniff`], an MP4's `moov` and
    /// `moof`s, Matroska elements, the Ogg pages checked…), one per parser loop turn that
    /// reads nothing. Never more than [`work_bound`](Self::work_bound) (the `probe_*` fuzz
    /// targets and `tests/probe_work.rs` check it), and at most [`MAX_PROBE_WORK`].
    pub work: u64,
    /// Wall-clock time of the whole probe.
    pub elapsed: Duration,
    /// Of which waiting for the source.
    pub waiting: Duration,
    /// The work or time budget ran out ([`MAX_PROBE_WORK`], [`PROBE_TIME`]): the facts are
    /// partial.
    pub exhausted: bool,
}

impl ProbeStats {
    /// The most work a probe may do for the bytes it read: `4 × bytes_read + 4096` steps.
    pub fn work_bound(&self) -> u64 {
        self.bytes_read.saturating_mul(4).saturating_add(4096)
    }
}

/// How far into a GIF [`probe`] walks to count its frames (every frame's data has to be
/// stepped over): a longer GIF gets no `frames` and no `duration`.
pub const GIF_WALK_LIMIT: u64 = MAX_PROBE_READ;

/// The facts of the file that `src` reads: [`sniff`]'s answer for its first bytes (with the
/// client's `hint` and the `filename`), completed by the header of its format. See the
/// [module docs](self) for what each format gives and what a probe may read.
///
/// ```
/// use tower_uploads::media::{Kind, MemorySource, probe};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// // A WAV header: 8 kHz, mono, 16-bit, 16000 bytes of samples (one second).
/// let mut wav = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x40\x1f\0\0\x80\x3e\0\0\x02\0\x10\0".to_vec();
/// wav.extend_from_slice(b"data\x80\x3e\0\0");
/// wav.resize(wav.len() + 16000, 0);
/// let facts = probe(&MemorySource::new(wav), None, "a.wav").await;
/// assert_eq!(facts.kind, Kind::Audio);
/// assert_eq!(facts.duration, Some(1.0));
/// assert_eq!(facts.codec.as_deref(), Some("pcm_s16le"));
/// assert_eq!(facts.container.as_deref(), Some("wav"));
/// # });
/// ```
pub async fn probe(src: &dyn Source, hint: Option<&str>, filename: &str) -> MediaFacts {
    probe_with_stats(src, hint, filename).await.0
}

/// [`probe`], and what it cost.
pub async fn probe_with_stats(
    src: &dyn Source,
    hint: Option<&str>,
    filename: &str,
) -> (MediaFacts, ProbeStats) {
    let mut r = Reader::new(src);
    let facts = probe_in(&mut r, hint, filename).await;
    (facts, r.stats())
}

async fn probe_in(r: &mut Reader<'_>, hint: Option<&str>, filename: &str) -> MediaFacts {
    let head = r.head().await.unwrap_or_default();
    let sniffed = sniff(&head, hint, filename);
    if !sniffed.recognised || sniffed.kind == Kind::Other || r.work(head.len() as u64).is_none() {
        return sniffed;
    }
    let r = &mut *r;
    let mut facts = sniffed.clone();
    let parsed = match sniffed.mime_type.as_str() {
        "video/mp4" | "video/x-m4v" | "video/quicktime" | "audio/m4a" => {
            mp4::probe(r, &mut facts).await
        }
        "video/webm" | "video/x-matroska" => mkv::probe(r, &mut facts).await,
        "audio/mpeg" => mp3::probe(r, &mut facts).await,
        "audio/x-wav" => wav::probe(r, &mut facts).await,
        "audio/x-flac" => flac::probe(r, &mut facts, 0).await,
        "audio/ogg" | "audio/opus" => ogg::probe(r, &mut facts).await,
        "image/gif" => gif::probe(r, &mut facts).await,
        "image/webp" => webp::probe(r, &mut facts).await,
        _ if sniffed.kind == Kind::Image => image::probe(r, &mut facts).await,
        _ => None,
    };
    match parsed {
        Some(()) => finish(facts, r.size()),
        None => sniffed,
    }
}

/// Tidies what a parser found: a plausible duration, a snapped frame rate, the overall
/// bitrate.
fn finish(mut f: MediaFacts, size: u64) -> MediaFacts {
    f.width = f.width.filter(|&w| w > 0);
    f.height = f.height.filter(|&h| h > 0);
    f.duration = f.duration.filter(|d| d.is_finite() && *d > 0.0);
    f.fps = f.fps.and_then(tidy_fps);
    f.bitrate = f.duration.and_then(|d| {
        let b = (size as f64 * 8.0 / d).round();
        (b.is_finite() && b >= 1.0 && b < u64::MAX as f64).then_some(b as u64)
    });
    f.width = f.width.filter(|w| *w > 0);
    f.height = f.height.filter(|h| *h > 0);
    f
}

/// A frame rate, snapped to an integer or an NTSC rate (`n × 1000/1001`) within 0.01 %.
fn tidy_fps(x: f64) -> Option<f64> {
    if !(x.is_finite() && x > 0.0 && x < 1e6) {
        return None;
    }
    let near = |y: f64| (y - y.round()).abs() <= 1e-4 * y && y.round() >= 1.0;
    Some(if near(x) {
        x.round()
    } else if near(x * 1.001) {
        (x * 1.001).round() * 1000.0 / 1001.0
    } else {
        x
    })
}

/// Sets the kind of a container from its streams (see the module docs): video when it has
/// a video stream, else audio when it has an audio stream; `audio_type` / `video_type` are
/// the MIME types to use when the kind changes.
fn set_kind(
    f: &mut MediaFacts,
    has_video: bool,
    has_audio: bool,
    audio_type: Option<&str>,
    video_type: Option<&str>,
) {
    if has_video && f.kind != Kind::Video {
        f.kind = Kind::Video;
        if let Some(t) = video_type {
            f.mime_type = t.to_owned();
        }
    } else if !has_video && has_audio && f.kind != Kind::Audio {
        f.kind = Kind::Audio;
        if let Some(t) = audio_type {
            f.mime_type = t.to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_snapping() {
        assert_eq!(tidy_fps(25.0), Some(25.0));
        assert_eq!(tidy_fps(1e9 / 41_666_667.0), Some(24.0));
        assert_eq!(tidy_fps(1e9 / 33_366_667.0), Some(30000.0 / 1001.0));
        assert_eq!(tidy_fps(12.5), Some(12.5));
        assert_eq!(tidy_fps(0.0), None);
        assert_eq!(tidy_fps(f64::NAN), None);
        assert_eq!(tidy_fps(0.5), Some(0.5));
    }

    #[test]
    fn probe_future_is_send() {
        fn send<T: Send>(_: &T) {}
        let src = crate::media::MemorySource::new(Vec::new());
        send(&probe(&src, None, ""));
    }
}
