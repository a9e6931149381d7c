//! WebP: an animated file (the `VP8X` animation flag) is walked chunk by chunk, counting the
//! `ANMF` frames and adding up their durations. Dimensions (the canvas) come from `sniff`.

use super::MediaFacts;
use super::bits::{le24, le32, ratio};
use super::reader::Reader;

/// How much a chunk-header read past the head fetches.
const AHEAD: u64 = 4096;

pub(super) async fn probe(r: &mut Reader<'_>, f: &mut MediaFacts) -> Option<()> {
    f.codec = Some("webp".to_owned());
    f.container = Some("webp".to_owned());
    let h = r.get(0, 30, AHEAD).await?;
    let animated = h.get(12..16) == Some(b"VP8X") && h.get(20).is_some_and(|b| b & 0x02 != 0);
    if !animated {
        return Some(());
    }
    // The RIFF size bounds the walk as well as the file.
    let end = u64::from(le32(&h, 4)?).saturating_add(8).min(r.size());
    let (mut frames, mut millis) = (0u64, 0u64);
    let mut at = 12u64;
    while at.saturating_add(8) <= end {
        let Some(c) = r.get(at, 8 + 16, AHEAD).await else {
            // Out of budget: no count rather than a short one.
            return Some(());
        };
        let Some(len) = le32(&c, 4).map(u64::from) else {
            break;
        };
        if c.get(..4) == Some(b"ANMF") {
            frames += 1;
            millis += u64::from(le24(&c, 8 + 12).unwrap_or(0));
        }
        at = at.saturating_add(8 + len + (len & 1));
    }
    if frames > 0 {
        f.frames = Some(frames);
        f.duration = ratio(millis as f64, 1000.0);
        f.fps = f.duration.and_then(|d| ratio(frames as f64, d));
    }
    Some(())
}
