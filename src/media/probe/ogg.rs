//! Ogg: the beginning-of-stream pages at the start name each logical stream's codec (Vorbis,
//! Opus, FLAC, Speex, Theora) and its rate; the duration is the granule position of the
//! main stream's last page, found in the file's tail (pages are checked by their CRC, so
//! stray `OggS` bytes in packet data are not mistaken for one), ÷ the rate, minus Opus's
//! pre-skip (RFC 7845 §4.1; ffprobe does not subtract it, so its Opus durations are
//! 6.5 ms longer for the usual pre-skip).

use super::bits::{be16, be32, le16, le32, le64, ratio};
use super::reader::Reader;
use super::{MediaFacts, flac, set_kind};

/// The tail read first, then the longer one when no page of the stream ends in it.
const TAILS: [u64; 2] = [64 << 10, 1 << 20];

/// The most beginning-of-stream pages looked at.
const MAX_STREAMS: usize = 16;

#[derive(Debug, Default, Clone, PartialEq)]
struct Stream {
    serial: u32,
    codec: &'static str,
    video: bool,
    /// Granule positions per second (for Theora: frames per second, as a ratio).
    rate: (u64, u64),
    pre_skip: u64,
    /// Theora's granule shift.
    shift: u8,
    width: u32,
    height: u32,
}

/// A page header at the start of `b`: `(header type, granule, serial, page length)`.
fn page(b: &[u8]) -> Option<(u8, u64, u32, usize)> {
    if b.get(..4)? != b"OggS" || *b.get(4)? != 0 {
        return None;
    }
    let segments = usize::from(*b.get(26)?);
    let lacing = b.get(27..27 + segments)?;
    let body: usize = lacing.iter().map(|&x| usize::from(x)).sum();
    Some((b[5], le64(b, 6)?, le32(b, 14)?, 27 + segments + body))
}

/// The stream that the first packet `p` of a beginning-of-stream page describes.
fn stream(serial: u32, p: &[u8]) -> Option<Stream> {
    let mut s = Stream {
        serial,
        ..Stream::default()
    };
    if p.starts_with(b"\x01vorbis") {
        s.codec = "vorbis";
        s.rate = (u64::from(le32(p, 12)?), 1);
    } else if p.starts_with(b"OpusHead") {
        s.codec = "opus";
        s.rate = (48_000, 1);
        s.pre_skip = u64::from(le16(p, 10)?);
    } else if p.starts_with(b"\x7FFLAC") {
        s.codec = "flac";
        let (rate, _) = flac::stream_info(p.get(9..)?)?;
        s.rate = (u64::from(rate), 1);
    } else if p.starts_with(b"Speex   ") {
        s.codec = "speex";
        s.rate = (u64::from(le32(p, 36)?), 1);
    } else if p.starts_with(b"\x80theora") {
        s.codec = "theora";
        s.video = true;
        let u24 = |at: usize| Some(be32(p, at - 1)? & 0xFF_FFFF);
        s.width = u24(14)?;
        s.height = u24(17)?;
        s.rate = (u64::from(be32(p, 22)?), u64::from(be32(p, 26)?));
        let b = be16(p, 40)?;
        s.shift = ((b >> 5) & 0x1F) as u8;
    } else {
        return None;
    }
    Some(s)
}

pub(super) async fn probe(r: &mut Reader<'_>, f: &mut MediaFacts) -> Option<()> {
    let size = r.size();
    // The beginning-of-stream pages.
    let mut streams = Vec::new();
    let mut at = 0u64;
    for _ in 0..MAX_STREAMS {
        let Some(h) = r.get(at, 27 + 255 + 64, 4096).await else {
            break;
        };
        let Some((kind, _, serial, len)) = page(&h) else {
            break;
        };
        if kind & 2 == 0 {
            break;
        }
        let packet = h.get(27 + usize::from(h[26])..).unwrap_or_default();
        if let Some(s) = stream(serial, packet) {
            streams.push(s);
        }
        at += len as u64;
    }
    let main = streams
        .iter()
        .find(|s| s.video)
        .or(streams.first())?
        .clone();
    set_kind(f, main.video, true, None, Some("video/ogg"));
    f.codec = Some(main.codec.to_owned());
    f.container = Some("ogg".to_owned());
    if main.video {
        f.width = Some(main.width);
        f.height = Some(main.height);
        f.fps = ratio(main.rate.0 as f64, main.rate.1 as f64);
    }
    // The last page of the main stream with a granule position.
    for tail in TAILS {
        let from = size.saturating_sub(tail);
        let Some(b) = r.get(from, size - from, 0).await else {
            break;
        };
        let (found, work) = last_granule(&b, main.serial);
        if r.work(work).is_none() {
            break;
        }
        if let Some(g) = found {
            f.duration = duration(&main, g);
            break;
        }
        if from == 0 {
            break;
        }
    }
    Some(())
}

/// The granule position of the last complete, CRC-valid page of stream `serial` in `b`
/// that has one (not -1), and the work it took (bytes of page headers and of CRCs).
///
/// The work is bounded by `2 × b.len()`: real pages do not overlap, so their headers and
/// checksums cover the tail at most once; past that, the `OggS` found are pages laid over
/// one another (`OggS\0` every 5 bytes is a page header with 103 segments at each of them,
/// and each would cost a CRC of ~7 KiB: seconds for a 1 MiB tail), and the search stops.
fn last_granule(b: &[u8], serial: u32) -> (Option<u64>, u64) {
    let limit = 2 * b.len();
    let mut work = 0usize;
    let mut end = b.len();
    while let Some(i) = b[..end].windows(4).rposition(|w| w == b"OggS") {
        end = i;
        let p = &b[i..];
        work += 27 + usize::from(p.get(26).copied().unwrap_or(0));
        if work > limit {
            break;
        }
        let Some((_, granule, s, len)) = page(p) else {
            continue;
        };
        if s != serial || granule == u64::MAX || len > p.len() {
            continue;
        }
        work += len;
        if work > limit {
            break;
        }
        if crc_ok(&p[..len]) {
            return (Some(granule), work as u64);
        }
    }
    (None, work as u64)
}

fn duration(s: &Stream, granule: u64) -> Option<f64> {
    if s.video {
        let frames = (granule >> s.shift) + (granule & ((1u64 << s.shift) - 1));
        return ratio(frames as f64 * s.rate.1 as f64, s.rate.0 as f64);
    }
    ratio(granule.saturating_sub(s.pre_skip) as f64, s.rate.0 as f64)
}

/// Whether a page's checksum field holds its CRC.
fn crc_ok(page: &[u8]) -> bool {
    le32(page, 22) == Some(crc(page))
}

/// The Ogg CRC-32 (polynomial 0x04C11DB7, unreflected, no final xor) of a page, with its
/// checksum field taken as zero.
fn crc(page: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = (i as u32) << 24;
            let mut k = 0;
            while k < 8 {
                c = if c & 0x8000_0000 != 0 {
                    c << 1 ^ 0x04C1_1DB7
                } else {
                    c << 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = 0u32;
    for (i, &b) in page.iter().enumerate() {
        let b = if (22..26).contains(&i) { 0 } else { b };
        crc = crc << 8 ^ TABLE[usize::from((crc >> 24) as u8 ^ b)];
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page with the given fields and body, with a correct CRC.
    fn make_page(kind: u8, granule: u64, serial: u32, body: &[u8]) -> Vec<u8> {
        let mut p = b"OggS\0".to_vec();
        p.push(kind);
        p.extend_from_slice(&granule.to_le_bytes());
        p.extend_from_slice(&serial.to_le_bytes());
        p.extend_from_slice(&[0; 8]);
        let mut lacing = vec![255u8; body.len() / 255];
        lacing.push((body.len() % 255) as u8);
        p.push(lacing.len() as u8);
        p.extend_from_slice(&lacing);
        p.extend_from_slice(body);
        let c = crc(&p);
        p[22..26].copy_from_slice(&c.to_le_bytes());
        p
    }

    #[test]
    fn pages_and_granules() {
        let mut head = b"OpusHead\x01\x02".to_vec();
        head.extend_from_slice(&312u16.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&[0, 0, 0]);
        let first = make_page(2, 0, 7, &head);
        let (kind, g, serial, len) = page(&first).unwrap();
        assert_eq!((kind, g, serial, len), (2, 0, 7, first.len()));
        assert!(crc_ok(&first));
        let s = stream(7, &head).unwrap();
        assert_eq!((s.codec, s.pre_skip, s.rate), ("opus", 312, (48_000, 1)));
        let mut file = first.clone();
        file.extend(make_page(4, 48_312, 7, &[1, 2, 3]));
        // A page of another stream after it, and a stray "OggS" with a bad CRC.
        file.extend(make_page(4, 99_999, 8, &[4]));
        file.extend_from_slice(b"OggS\0\x04garbage");
        assert_eq!(last_granule(&file, 7).0, Some(48_312));
        assert_eq!(duration(&s, 48_312), Some(1.0));
        let mut bad = make_page(4, 5, 7, &[9; 300]);
        bad[40] ^= 1;
        assert!(!crc_ok(&bad));
        assert_eq!(last_granule(&bad, 7).0, None);
    }

    /// `OggS\0` every 5 bytes: a page header (of serial `\0Ogg`, 103 segments, ~7 KiB
    /// long) at every one of them, none with a valid CRC. Checking them all took seconds for
    /// a 1 MiB tail; the search gives up after twice the tail's length in work.
    #[test]
    fn overlapping_pages_are_bounded() {
        let b = b"OggS\0".repeat(200_000);
        let serial = u32::from_le_bytes(*b"\0Ogg");
        assert!(page(&b[5..]).is_some_and(|(_, _, s, len)| s == serial && len > 7000));
        let t0 = std::time::Instant::now();
        let (found, work) = last_granule(&b, serial);
        assert_eq!(found, None);
        assert!(work <= 2 * b.len() as u64 + 70_000, "{work}");
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t0.elapsed()
        );
    }
}
