//! Matroska and WebM: a small EBML walker over the Segment's top-level elements up to the
//! first `Cluster`, reading `Info` (duration) and `Tracks` (codecs, picture size, frame
//! duration); when they are not before the first cluster, the `SeekHead` says where they
//! are. No cluster is read, so the frame count stays `None` (Matroska headers do not state
//! it); a live recording without a `Duration` (a browser's `MediaRecorder`) has none either.
//!
//! No crate is used here: the Matroska crates parse from a blocking `Read + Seek` and read
//! more than the headers (`matroska-demuxer` parses the whole `Cues` and `Tags`, and walks
//! every cluster of a file without a `SeekHead`).

use super::bits::ratio;
use super::reader::Reader;
use super::{Kind, MAX_PROBE_READ, MediaFacts, set_kind};

const EBML: u32 = 0x1A45_DFA3;
const DOC_TYPE: u32 = 0x4282;
const SEGMENT: u32 = 0x1853_8067;
const SEEK_HEAD: u32 = 0x114D_9B74;
const SEEK: u32 = 0x4DBB;
const SEEK_ID: u32 = 0x53AB;
const SEEK_POSITION: u32 = 0x53AC;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_TYPE: u32 = 0x83;
const CODEC_ID: u32 = 0x86;
const DEFAULT_DURATION: u32 = 0x23_E383;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const AUDIO: u32 = 0xE1;
const BIT_DEPTH: u32 = 0x6264;
const CLUSTER: u32 = 0x1F43_B675;

/// The most Segment children looked at before giving up on finding `Info` and `Tracks`.
const MAX_ELEMENTS: u32 = 256;

/// The largest `Info` or `SeekHead` read.
const MAX_SMALL: u64 = 1 << 20;

/// An element header: its ID, the size of its data (`None`: unknown) and the header's length.
#[derive(Debug, PartialEq)]
struct Header {
    id: u32,
    size: Option<u64>,
    len: u64,
}

/// Parses the element header at the start of `b`.
fn header(b: &[u8]) -> Option<Header> {
    let (id, id_len) = vint(b, 4)?;
    let id = u32::try_from(id | marker(id_len)).ok()?;
    let (size, size_len) = vint(b.get(id_len..)?, 8)?;
    let unknown = size == marker(size_len) - 1;
    Some(Header {
        id,
        size: (!unknown).then_some(size),
        len: (id_len + size_len) as u64,
    })
}

/// The marker bit of an EBML variable-size integer of `len` bytes.
fn marker(len: usize) -> u64 {
    1u64 << (7 * len)
}

/// An EBML variable-size integer (without its marker bit) and its length, at most `max`
/// bytes long.
fn vint(b: &[u8], max: usize) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > max {
        return None;
    }
    let bytes = b.get(..len)?;
    let mut v = u64::from(first) & (marker(len) / (1 << (8 * (len - 1))) - 1);
    for &c in &bytes[1..] {
        v = v << 8 | u64::from(c);
    }
    Some((v, len))
}

/// The children of a master element's data: `(id, data)`, stopping at the first malformed
/// or truncated one.
fn children(mut b: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    std::iter::from_fn(move || {
        let h = header(b)?;
        let start = usize::try_from(h.len).ok()?;
        let end = start.checked_add(usize::try_from(h.size?).ok()?)?;
        let data = b.get(start..end)?;
        b = &b[end..];
        Some((h.id, data))
    })
}

fn uint(b: &[u8]) -> Option<u64> {
    (b.len() <= 8).then(|| b.iter().fold(0u64, |v, &c| v << 8 | u64::from(c)))
}

fn float(b: &[u8]) -> Option<f64> {
    match b.len() {
        4 => Some(f64::from(f32::from_be_bytes(b.try_into().ok()?))),
        8 => Some(f64::from_be_bytes(b.try_into().ok()?)),
        _ => None,
    }
}

#[derive(Default)]
struct Found {
    doc_type: Option<String>,
    /// `Info` was read.
    info: bool,
    /// Seconds.
    duration: Option<f64>,
    tracks: Option<Vec<Track>>,
}

#[derive(Default)]
struct Track {
    kind: u64,
    codec_id: String,
    default_duration: Option<u64>,
    width: Option<u64>,
    height: Option<u64>,
    bit_depth: Option<u64>,
}

pub(super) async fn probe(r: &mut Reader<'_>, f: &mut MediaFacts) -> Option<()> {
    let size = r.size();
    // The EBML header.
    let h = r.get(0, 12, 4096).await?;
    let eh = header(&h)?;
    if eh.id != EBML {
        return None;
    }
    let eh_size = eh.size?;
    let mut found = Found::default();
    let ebml = r.get(eh.len, eh_size.min(MAX_SMALL), 0).await?;
    for (id, data) in children(&ebml) {
        if id == DOC_TYPE {
            let s = String::from_utf8_lossy(data);
            found.doc_type = Some(s.trim_end_matches('\0').to_owned());
        }
    }
    // The Segment (skipping anything, such as a Void, before it).
    let mut at = eh.len.checked_add(eh_size)?;
    let mut before = 0..MAX_ELEMENTS;
    let (segment, segment_end) = loop {
        before.next()?;
        let b = r.get(at, 12, 4096).await?;
        let h = header(&b)?;
        if h.id == SEGMENT {
            let data = at.checked_add(h.len)?;
            let end = h
                .size
                .and_then(|s| data.checked_add(s))
                .unwrap_or(size)
                .min(size);
            break (data, end);
        }
        at = at.checked_add(h.len)?.checked_add(h.size?)?;
    };
    // Its children, up to the first Cluster.
    let mut seeks: Vec<(u32, u64)> = Vec::new();
    let mut at = segment;
    for _ in 0..MAX_ELEMENTS {
        if at >= segment_end || (found.info && found.tracks.is_some()) {
            break;
        }
        let Some(b) = r.get(at, 12, 4096).await else {
            break;
        };
        let Some(h) = header(&b) else { break };
        if h.id == CLUSTER {
            break;
        }
        let Some(len) = h.size else { break };
        let data = at.checked_add(h.len)?;
        match h.id {
            SEEK_HEAD if len <= MAX_SMALL => {
                if let Some(d) = r.get(data, len, 0).await
                    && r.work(d.len() as u64).is_some()
                {
                    seeks.extend(seek_head(&d));
                }
            }
            INFO | TRACKS => element(r, h.id, data, len, &mut found).await,
            _ => {}
        }
        at = data.checked_add(len)?;
    }
    // What the SeekHead points at, when it was not on the way (the first entry of each).
    seeks.retain(|(id, _)| *id == INFO || *id == TRACKS);
    seeks.sort_by_key(|(id, _)| *id);
    seeks.dedup_by_key(|(id, _)| *id);
    for (id, pos) in seeks {
        let done = match id {
            INFO => found.info,
            TRACKS => found.tracks.is_some(),
            _ => true,
        };
        let Some(pos) = segment.checked_add(pos) else {
            continue;
        };
        if done || pos >= segment_end {
            continue;
        }
        let Some(b) = r.get(pos, 12, 4096).await else {
            continue;
        };
        if let Some(Header {
            id: got,
            size: Some(len),
            len: hl,
        }) = header(&b)
            && got == id
        {
            element(r, id, pos + hl, len, &mut found).await;
        }
    }
    fill(f, found)
}

/// Reads and parses an `Info` or `Tracks` element's data.
async fn element(r: &mut Reader<'_>, id: u32, data: u64, len: u64, found: &mut Found) {
    let limit = if id == INFO {
        MAX_SMALL
    } else {
        MAX_PROBE_READ
    };
    if len > limit {
        return;
    }
    let Some(d) = r.get(data, len, 0).await else {
        return;
    };
    if r.work(d.len() as u64).is_none() {
        return;
    }
    if id == INFO {
        found.info = true;
        found.duration = info_duration(&d);
    } else {
        found.tracks = Some(tracks(&d));
    }
}

/// The `(id, position)` entries of a SeekHead's data.
fn seek_head(d: &[u8]) -> Vec<(u32, u64)> {
    children(d)
        .filter(|(id, _)| *id == SEEK)
        .filter_map(|(_, seek)| {
            let mut id = None;
            let mut pos = None;
            for (cid, v) in children(seek) {
                match cid {
                    SEEK_ID => id = uint(v).and_then(|x| u32::try_from(x).ok()),
                    SEEK_POSITION => pos = uint(v),
                    _ => {}
                }
            }
            Some((id?, pos?))
        })
        .collect()
}

/// The duration in seconds that an `Info` element's data states.
fn info_duration(d: &[u8]) -> Option<f64> {
    let mut scale = 1_000_000u64;
    let mut duration = None;
    for (id, v) in children(d) {
        match id {
            TIMESTAMP_SCALE => scale = uint(v).filter(|s| *s > 0).unwrap_or(scale),
            DURATION => duration = float(v),
            _ => {}
        }
    }
    ratio(duration? * scale as f64, 1e9)
}

/// The entries of a `Tracks` element's data.
fn tracks(d: &[u8]) -> Vec<Track> {
    children(d)
        .filter(|(id, _)| *id == TRACK_ENTRY)
        .map(|(_, entry)| {
            let mut t = Track::default();
            for (id, v) in children(entry) {
                match id {
                    TRACK_TYPE => t.kind = uint(v).unwrap_or(0),
                    CODEC_ID => {
                        t.codec_id = String::from_utf8_lossy(v).trim_end_matches('\0').to_owned()
                    }
                    DEFAULT_DURATION => t.default_duration = uint(v),
                    VIDEO => {
                        for (id, v) in children(v) {
                            match id {
                                PIXEL_WIDTH => t.width = uint(v),
                                PIXEL_HEIGHT => t.height = uint(v),
                                _ => {}
                            }
                        }
                    }
                    AUDIO => {
                        for (id, v) in children(v) {
                            if id == BIT_DEPTH {
                                t.bit_depth = uint(v);
                            }
                        }
                    }
                    _ => {}
                }
            }
            t
        })
        .collect()
}

fn fill(f: &mut MediaFacts, found: Found) -> Option<()> {
    let tracks = found.tracks.unwrap_or_default();
    if found.duration.is_none() && tracks.is_empty() {
        return None;
    }
    let video = tracks.iter().find(|t| t.kind == 1);
    let audio = tracks.iter().find(|t| t.kind == 2);
    // The DocType decides between WebM and Matroska (infer calls every EBML file WebM
    // unless its header has one exact layout), the streams between video and audio.
    let webm = found.doc_type.as_deref() == Some("webm");
    set_kind(f, video.is_some(), audio.is_some(), None, None);
    f.mime_type = match (webm, f.kind) {
        (true, Kind::Audio) => "audio/webm",
        (true, _) => "video/webm",
        (false, Kind::Audio) => "audio/x-matroska",
        (false, _) => "video/x-matroska",
    }
    .to_owned();
    f.container = Some(if webm { "webm" } else { "matroska" }.to_owned());
    f.duration = found.duration;
    f.codec = video.or(audio).and_then(codec_name).map(str::to_owned);
    if let Some(v) = video {
        f.width = v.width.and_then(|w| u32::try_from(w).ok());
        f.height = v.height.and_then(|h| u32::try_from(h).ok());
        f.fps = v.default_duration.and_then(|d| ratio(1e9, d as f64));
    }
    Some(())
}

/// ffprobe's `codec_name` for a track's `CodecID`.
fn codec_name(t: &Track) -> Option<&'static str> {
    let id = t.codec_id.as_str();
    Some(match id {
        "V_VP8" => "vp8",
        "V_VP9" => "vp9",
        "V_AV1" => "av1",
        "V_MPEG4/ISO/AVC" => "h264",
        "V_MPEGH/ISO/HEVC" => "hevc",
        "V_MPEG4/ISO/SP" | "V_MPEG4/ISO/ASP" | "V_MPEG4/ISO/AP" => "mpeg4",
        "V_MPEG1" => "mpeg1video",
        "V_MPEG2" => "mpeg2video",
        "V_THEORA" => "theora",
        "V_PRORES" => "prores",
        "V_MJPEG" => "mjpeg",
        "V_FFV1" => "ffv1",
        "V_UNCOMPRESSED" => "rawvideo",
        "A_OPUS" => "opus",
        "A_VORBIS" => "vorbis",
        "A_MPEG/L3" => "mp3",
        "A_MPEG/L2" => "mp2",
        "A_MPEG/L1" => "mp1",
        "A_FLAC" => "flac",
        "A_AC3" => "ac3",
        "A_EAC3" => "eac3",
        "A_DTS" => "dts",
        "A_TRUEHD" => "truehd",
        "A_ALAC" => "alac",
        "A_PCM/INT/LIT" => match t.bit_depth {
            Some(8) => "pcm_u8",
            Some(24) => "pcm_s24le",
            Some(32) => "pcm_s32le",
            _ => "pcm_s16le",
        },
        "A_PCM/INT/BIG" => match t.bit_depth {
            Some(24) => "pcm_s24be",
            Some(32) => "pcm_s32be",
            _ => "pcm_s16be",
        },
        "A_PCM/FLOAT/IEEE" => match t.bit_depth {
            Some(64) => "pcm_f64le",
            _ => "pcm_f32le",
        },
        "S_TEXT/UTF8" => "subrip",
        "S_TEXT/WEBVTT" => "webvtt",
        "S_TEXT/ASS" | "S_TEXT/SSA" => "ass",
        _ if id.starts_with("A_AAC") => "aac",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        // EBML header ID, size 0x23 in one byte.
        assert_eq!(
            header(&[0x1A, 0x45, 0xDF, 0xA3, 0xA3]),
            Some(Header {
                id: EBML,
                size: Some(0x23),
                len: 5
            })
        );
        // Segment of unknown size (8 bytes of ones).
        let mut b = vec![0x18, 0x53, 0x80, 0x67, 0x01];
        b.extend_from_slice(&[0xFF; 7]);
        assert_eq!(
            header(&b),
            Some(Header {
                id: SEGMENT,
                size: None,
                len: 12
            })
        );
        // Unknown size, one byte.
        assert_eq!(
            header(&[0xEC, 0xFF]),
            Some(Header {
                id: 0xEC,
                size: None,
                len: 2
            })
        );
        // Two-byte size.
        assert_eq!(
            header(&[0x86, 0x40, 0x02]),
            Some(Header {
                id: 0x86,
                size: Some(2),
                len: 3
            })
        );
        // A zero byte is no vint; an ID longer than 4 bytes is refused.
        assert_eq!(header(&[0x00, 0x81]), None);
        assert_eq!(header(&[0x08, 0, 0, 0, 0, 0x81]), None);
        assert_eq!(header(&[0x1A, 0x45]), None);
    }

    #[test]
    fn info() {
        // TimestampScale 1 000 000, Duration 2500.0 (f64) → 2.5 s.
        let mut d = vec![0x2A, 0xD7, 0xB1, 0x83, 0x0F, 0x42, 0x40, 0x44, 0x89, 0x88];
        d.extend_from_slice(&2500f64.to_be_bytes());
        assert_eq!(info_duration(&d), Some(2.5));
        // f32 duration.
        let mut d = vec![0x44, 0x89, 0x84];
        d.extend_from_slice(&1000f32.to_be_bytes());
        assert_eq!(info_duration(&d), Some(1.0));
        assert_eq!(info_duration(&[]), None);
    }
}
