//! MPEG audio (MP3, and layers I/II): ID3v2 tags are stepped over, the first frame header
//! found, and the duration taken from its Xing/Info or VBRI header (frame count × samples per
//! frame ÷ sample rate), else, for a constant-bitrate stream, from the audio bytes ÷ the
//! bitrate (as ffprobe estimates it). A FLAC stream behind an ID3v2 tag goes to the FLAC
//! parser.

use super::bits::{be32, ratio};
use super::reader::Reader;
use super::{MediaFacts, flac};

/// How far past the tags a frame header is looked for.
const SYNC_WINDOW: u64 = 4096;

/// A parsed frame header.
#[derive(Debug, PartialEq)]
struct Frame {
    /// 1 for MPEG-1, 2 for MPEG-2, 25 for MPEG-2.5.
    version: u8,
    layer: u8,
    /// Bits per second.
    bitrate: u32,
    sample_rate: u32,
    mono: bool,
    /// The frame's length in bytes.
    len: u32,
}

impl Frame {
    fn parse(h: u32) -> Option<Frame> {
        if h >> 21 != 0x7FF {
            return None;
        }
        let version = match (h >> 19) & 3 {
            0 => 25,
            2 => 2,
            3 => 1,
            _ => return None,
        };
        let layer = match (h >> 17) & 3 {
            1 => 3,
            2 => 2,
            3 => 1,
            _ => return None,
        };
        let bitrate_index = ((h >> 12) & 0xF) as usize;
        let rate_index = ((h >> 10) & 3) as usize;
        if bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
            return None;
        }
        const V1: [[u32; 14]; 3] = [
            [
                32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
            ],
            [
                32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
            ],
            [
                32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
            ],
        ];
        const V2: [[u32; 14]; 2] = [
            [
                32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
            ],
            [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
        ];
        let kbps = if version == 1 {
            V1[usize::from(layer - 1)][bitrate_index - 1]
        } else {
            V2[usize::from(layer != 1)][bitrate_index - 1]
        };
        let base = [44_100, 48_000, 32_000][rate_index];
        let sample_rate = match version {
            1 => base,
            2 => base / 2,
            _ => base / 4,
        };
        let padding = (h >> 9) & 1;
        let bitrate = kbps * 1000;
        let len = match layer {
            1 => (12 * bitrate / sample_rate + padding) * 4,
            3 if version != 1 => 72 * bitrate / sample_rate + padding,
            _ => 144 * bitrate / sample_rate + padding,
        };
        Some(Frame {
            version,
            layer,
            bitrate,
            sample_rate,
            mono: (h >> 6) & 3 == 3,
            len,
        })
    }

    fn samples(&self) -> u32 {
        match (self.layer, self.version) {
            (1, _) => 384,
            (3, 2 | 25) => 576,
            _ => 1152,
        }
    }

    /// Where a Xing/Info header would sit, from the start of the frame.
    fn xing_offset(&self) -> usize {
        4 + match (self.version == 1, self.mono) {
            (true, false) => 32,
            (true, true) | (false, false) => 17,
            (false, true) => 9,
        }
    }
}

/// The frame count that a Xing/Info or VBRI header in `frame` (a first frame's bytes) states.
fn vbr_frames(frame: &[u8], h: &Frame) -> Option<u32> {
    let x = h.xing_offset();
    if let Some(tag) = frame.get(x..x + 4)
        && (tag == b"Xing" || tag == b"Info")
    {
        let flags = be32(frame, x + 4)?;
        return if flags & 1 != 0 {
            be32(frame, x + 8)
        } else {
            None
        };
    }
    if frame.get(36..40) == Some(b"VBRI") {
        return be32(frame, 36 + 14);
    }
    None
}

/// Where the audio starts: past any ID3v2 tags.
async fn skip_id3(r: &mut Reader<'_>) -> Option<u64> {
    let mut at = 0u64;
    for _ in 0..8 {
        let h = r.get(at, 10, 4096).await?;
        if h.len() < 10 || &h[..3] != b"ID3" {
            break;
        }
        let s = &h[6..10];
        if s.iter().any(|b| b & 0x80 != 0) {
            return None;
        }
        let size = s.iter().fold(0u64, |v, &b| v << 7 | u64::from(b));
        let footer = if h[5] & 0x10 != 0 { 10 } else { 0 };
        at = at.checked_add(10 + size + footer)?;
    }
    Some(at)
}

pub(super) async fn probe(r: &mut Reader<'_>, f: &mut MediaFacts) -> Option<()> {
    let start = skip_id3(r).await?;
    let b = r.get(start, SYNC_WINDOW + 4, SYNC_WINDOW).await?;
    if b.starts_with(b"fLaC") {
        return flac::probe(r, f, start).await;
    }
    r.work(b.len() as u64)?;
    // The first offset with a valid header, followed by another valid header (when the
    // bytes reach that far).
    let (offset, frame) = (0..b.len().saturating_sub(3)).find_map(|i| {
        let h = Frame::parse(be32(&b, i)?)?;
        let next = i + h.len as usize;
        match be32(&b, next) {
            Some(n) if Frame::parse(n).is_none_or(|n| n.sample_rate != h.sample_rate) => None,
            _ => Some((i, h)),
        }
    })?;
    let audio_start = start + offset as u64;
    let first = r.get(audio_start, u64::from(frame.len).max(64), 0).await?;
    f.codec = Some(["mp1", "mp2", "mp3"][usize::from(frame.layer - 1)].to_owned());
    f.container = Some("mp3".to_owned());
    f.duration = match vbr_frames(&first, &frame) {
        Some(n) => ratio(
            f64::from(n) * f64::from(frame.samples()),
            f64::from(frame.sample_rate),
        ),
        None => ratio(
            r.size().saturating_sub(audio_start) as f64 * 8.0,
            f64::from(frame.bitrate),
        ),
    };
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers() {
        // MPEG-1 layer III, 128 kbit/s, 44.1 kHz, stereo.
        let h = Frame::parse(0xFFFB_9064).unwrap();
        assert_eq!(
            (h.version, h.layer, h.bitrate, h.sample_rate, h.len),
            (1, 3, 128_000, 44_100, 417)
        );
        assert_eq!((h.samples(), h.xing_offset()), (1152, 36));
        // MPEG-2 layer III, 64 kbit/s, 22.05 kHz, mono.
        let h = Frame::parse(0xFFF3_80C4).unwrap();
        assert_eq!(
            (h.version, h.bitrate, h.sample_rate, h.mono),
            (2, 64_000, 22_050, true)
        );
        assert_eq!((h.samples(), h.xing_offset()), (576, 13));
        // Free format, bad bitrate, reserved rate, reserved version: refused.
        assert_eq!(Frame::parse(0xFFFB_0064), None);
        assert_eq!(Frame::parse(0xFFFB_F064), None);
        assert_eq!(Frame::parse(0xFFFB_9C64), None);
        assert_eq!(Frame::parse(0xFFEB_9064), None);
        assert_eq!(Frame::parse(0x1234_5678), None);
    }
}
