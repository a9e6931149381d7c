//! GIF: a block walker that counts the image descriptors and adds up the delays of their
//! Graphic Control Extensions. The frames' data has to be stepped over sub-block by
//! sub-block, so the walk reads the file up to [`GIF_WALK_LIMIT`]; a longer GIF gets no
//! frame count or duration (its dimensions come from the header, through `sniff`).
//!
//! The duration follows ffmpeg's GIF demuxer: the sum of the Graphic Control Extensions'
//! delays, a delay under 2 centiseconds counting as 10 (as browsers show it); a frame
//! without one adds nothing.

use super::bits::{le16, ratio};
use super::reader::Reader;
use super::{GIF_WALK_LIMIT, MediaFacts};

/// How much the walk reads at a time.
const WINDOW: u64 = 1 << 20;

/// What the walk found: frames and the sum of their delays in centiseconds, or `None` when
/// the walk went past [`GIF_WALK_LIMIT`].
async fn walk(r: &mut Reader<'_>) -> Option<(u64, u64)> {
    let b = r.get(0, 13, WINDOW).await?;
    if b.len() < 13 || !(b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a")) {
        return None;
    }
    let mut pos = 13 + table(b[10]);
    let (mut frames, mut total) = (0u64, 0u64);
    loop {
        if pos > GIF_WALK_LIMIT {
            return None;
        }
        let b = r.get(pos, 10, WINDOW).await?;
        match b.first() {
            Some(0x2C) if b.len() == 10 => {
                frames += 1;
                pos = skip_blocks(r, pos + 10 + table(b[9]) + 1).await?;
            }
            Some(0x21) if b.len() >= 2 => {
                if b[1] == 0xF9 && b.get(2) == Some(&4) {
                    let d = u64::from(le16(&b, 4)?);
                    total += if d < 2 { 10 } else { d };
                }
                pos = skip_blocks(r, pos + 2).await?;
            }
            // The trailer, the end of the file, or bytes that are not a block: the end.
            _ => return Some((frames, total)),
        }
    }
}

/// The size of a colour table whose flags are in `packed`.
fn table(packed: u8) -> u64 {
    if packed & 0x80 != 0 {
        3 << ((packed & 7) + 1)
    } else {
        0
    }
}

/// How much of the file [`skip_blocks`] steps through in memory at a time.
const CHUNK: u64 = 64 << 10;

/// The position after the sub-blocks that start at `pos` (after their 0 terminator, or the
/// end of the file). They are stepped over in memory, [`CHUNK`] bytes at a time: a GIF of
/// one-byte sub-blocks (two bytes each) costs a loop turn per two bytes, not a read of the
/// reader per block (which made a 16 MiB one use up the probe's time budget).
async fn skip_blocks(r: &mut Reader<'_>, mut pos: u64) -> Option<u64> {
    loop {
        if pos > GIF_WALK_LIMIT {
            return Some(pos);
        }
        let chunk = r.get(pos, CHUNK, WINDOW).await?;
        if chunk.is_empty() {
            return Some(pos);
        }
        let mut i = 0;
        while let Some(&n) = chunk.get(i) {
            if n == 0 {
                r.work(i as u64)?;
                return Some(pos + i as u64 + 1);
            }
            i += 1 + usize::from(n);
        }
        r.work(i as u64)?;
        pos += i as u64;
    }
}

pub(super) async fn probe(r: &mut Reader<'_>, f: &mut MediaFacts) -> Option<()> {
    f.codec = Some("gif".to_owned());
    f.container = Some("gif".to_owned());
    if let Some((frames, centis)) = walk(r).await
        && frames > 0
    {
        f.frames = Some(frames);
        if frames > 1 {
            f.duration = ratio(centis as f64, 100.0);
            f.fps = f.duration.and_then(|d| ratio(frames as f64, d));
        }
    }
    Some(())
}
