//! Still images: `codec` and `container` names, and the dimensions that `sniff` could not
//! see in the head: a JPEG whose frame header comes after large metadata segments (walked
//! segment by segment), a TIFF whose first image directory is past the head (read at its
//! offset), a HEIF/AVIF whose `meta` box is (the first MiB is given to `imagesize`).

use super::MediaFacts;
use super::bits::{be16, be32, le16, le32};
use super::reader::Reader;

/// How much a header read past the head fetches.
const AHEAD: u64 = 4096;

/// The most JPEG segments stepped over.
const MAX_SEGMENTS: u32 = 256;

/// How much of a HEIF/AVIF file `imagesize` is given when the head was not enough.
const HEIF_HEAD: u64 = 1 << 20;

pub(super) async fn probe(r: &mut Reader<'_>, f: &mut MediaFacts) -> Option<()> {
    let (codec, container) = match f.mime_type.as_str() {
        "image/png" => (Some("png"), "png"),
        "image/jpeg" => (Some("mjpeg"), "jpeg"),
        "image/bmp" => (Some("bmp"), "bmp"),
        "image/tiff" => (Some("tiff"), "tiff"),
        "image/avif" => (Some("av1"), "avif"),
        "image/heif" => (Some("hevc"), "heif"),
        "image/jxl" => (Some("jpegxl"), "jxl"),
        "image/jp2" => (Some("jpeg2000"), "jp2"),
        "image/vnd.microsoft.icon" => (None, "ico"),
        "image/svg+xml" => (None, "svg"),
        _ => return None,
    };
    f.codec = codec.map(str::to_owned);
    f.container = Some(container.to_owned());
    if f.width.is_none() || f.height.is_none() {
        let found = match container {
            "jpeg" => jpeg_size(r).await,
            "tiff" => tiff_size(r).await,
            "avif" | "heif" => {
                let b = r.get(0, HEIF_HEAD, 0).await?;
                r.work(b.len() as u64)?;
                imagesize::blob_size(&b).ok().and_then(|s| {
                    Some((u32::try_from(s.width).ok()?, u32::try_from(s.height).ok()?))
                })
            }
            _ => None,
        };
        if let Some((w, h)) = found {
            f.width = Some(w);
            f.height = Some(h);
        }
    }
    Some(())
}

/// A JPEG's dimensions from its first SOFn segment.
async fn jpeg_size(r: &mut Reader<'_>) -> Option<(u32, u32)> {
    let mut at = 2u64;
    for _ in 0..MAX_SEGMENTS {
        let b = r.get(at, 9, AHEAD).await?;
        if *b.first()? != 0xFF {
            return None;
        }
        let marker = *b.get(1)?;
        match marker {
            // Fill bytes, and markers without a length.
            0xFF => {
                at += 1;
                continue;
            }
            0x01 | 0xD0..=0xD8 => {
                at += 2;
                continue;
            }
            0xD9 | 0xDA => return None,
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let (h, w) = (be16(&b, 5)?, be16(&b, 7)?);
                return Some((u32::from(w), u32::from(h)));
            }
            _ => at += 2 + u64::from(be16(&b, 2)?),
        }
    }
    None
}

/// A TIFF's dimensions from its first image directory (`ImageWidth`, `ImageLength`).
async fn tiff_size(r: &mut Reader<'_>) -> Option<(u32, u32)> {
    let h = r.get(0, 8, AHEAD).await?;
    let little = match h.get(..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let u16_at = |b: &[u8], at: usize| if little { le16(b, at) } else { be16(b, at) };
    let u32_at = |b: &[u8], at: usize| if little { le32(b, at) } else { be32(b, at) };
    let ifd = u64::from(u32_at(&h, 4)?);
    let n = r.get(ifd, 2, AHEAD).await?;
    let count = u64::from(u16_at(&n, 0)?);
    let entries = r.get(ifd + 2, count * 12, AHEAD).await?;
    r.work(entries.len() as u64 / 12)?;
    let (mut w, mut ht) = (None, None);
    for e in entries.chunks_exact(12) {
        let tag = u16_at(e, 0)?;
        let value = match u16_at(e, 2)? {
            3 => u32::from(u16_at(e, 8)?),
            4 => u32_at(e, 8)?,
            _ => continue,
        };
        match tag {
            256 => w = Some(value),
            257 => ht = Some(value),
            _ => {}
        }
    }
    Some((w?, ht?))
}
