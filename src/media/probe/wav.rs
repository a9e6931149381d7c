//! WAV (RIFF `WAVE`): the `fmt ` chunk (format tag, byte rate) and the `data` chunk's size;
//! duration = data bytes ÷ byte rate. A `data` size that is unset (0 or `0xFFFFFFFF`, as
//! streaming writers leave it) or runs past the end of the file counts up to the end.

use super::MediaFacts;
use super::bits::{le16, le32, ratio};
use super::reader::Reader;

/// The most chunks looked at.
const MAX_CHUNKS: u32 = 64;

pub(super) async fn probe(r: &mut Reader<'_>, f: &mut MediaFacts) -> Option<()> {
    let size = r.size();
    let riff = r.get(0, 12, 4096).await?;
    if riff.get(..4)? != b"RIFF" || riff.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12u64;
    let mut fmt = None;
    let mut data = None;
    for _ in 0..MAX_CHUNKS {
        let Some(h) = r.get(at, 8, 4096).await else {
            break;
        };
        if h.len() < 8 {
            break;
        }
        let len = u64::from(le32(&h, 4)?);
        let body = at + 8;
        match &h[..4] {
            b"fmt " => fmt = Some(r.get(body, len.min(40), 4096).await?),
            b"data" => {
                let left = size.saturating_sub(body);
                data = Some(if len == 0 || len == 0xFFFF_FFFF || len > left {
                    left
                } else {
                    len
                });
                break;
            }
            _ => {}
        }
        at = body + len + (len & 1);
    }
    let fmt = fmt?;
    let tag = le16(&fmt, 0)?;
    let rate = le32(&fmt, 4)?;
    let channels = le16(&fmt, 2)?;
    let byte_rate = le32(&fmt, 8)?;
    let align = le16(&fmt, 12)?;
    let bits = le16(&fmt, 14).unwrap_or(0);
    // WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID.
    let tag = if tag == 0xFFFE {
        le16(&fmt, 24).unwrap_or(tag)
    } else {
        tag
    };
    f.codec = codec_name(tag, bits).map(str::to_owned);
    f.container = Some("wav".to_owned());
    let byte_rate = if byte_rate > 0 {
        u64::from(byte_rate)
    } else {
        u64::from(rate) * u64::from(align.max(channels))
    };
    f.duration = data.and_then(|d| ratio(d as f64, byte_rate as f64));
    Some(())
}

/// ffprobe's `codec_name` for a WAVE format tag and sample size.
fn codec_name(tag: u16, bits: u16) -> Option<&'static str> {
    Some(match (tag, bits) {
        (1, 8) => "pcm_u8",
        (1, 24) => "pcm_s24le",
        (1, 32) => "pcm_s32le",
        (1, 64) => "pcm_s64le",
        (1, _) => "pcm_s16le",
        (3, 64) => "pcm_f64le",
        (3, _) => "pcm_f32le",
        (2, _) => "adpcm_ms",
        (6, _) => "pcm_alaw",
        (7, _) => "pcm_mulaw",
        (0x11, _) => "adpcm_ima_wav",
        (0x31, _) => "gsm_ms",
        (0x50, _) => "mp2",
        (0x55, _) => "mp3",
        (0xFF | 0x1610, _) => "aac",
        (0x2000, _) => "ac3",
        (0xF1AC, _) => "flac",
        _ => return None,
    })
}
