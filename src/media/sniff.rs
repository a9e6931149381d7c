//! The sniffer: [`MediaFacts`] from a file's first bytes, a `Content-Type` hint and the
//! filename (PROTOCOL.md §3).
//!
//! - Bytes that [`infer`] recognises decide `kind` and `type` (`image/*`, `video/*`,
//!   `audio/*` → image, video, audio; any other recognised type → `other` with infer's
//!   type). Two of infer's signatures are short ASCII prefixes that plain text can start
//!   with (`BM`, `GIF`): those must also look like a real BMP / GIF header to count.
//! - SVG, which infer does not know, is recognised here: `<svg` as the first element, after
//!   an optional BOM, XML declaration, comments and doctype.
//! - Anything else is `other`, typed by the hint when it is a valid MIME type, else by the
//!   filename's extension, else `application/octet-stream`. A hint or an extension never
//!   makes a file `image`, `video` or `audio`, and conditions see such a file as
//!   `application/octet-stream` ([`mime_for_conditions`]).
//! - Image dimensions come from [`imagesize`] (or the SVG root's `width`/`height`/`viewBox`).
//!
//! Every function here is total: any input, however short or hostile, gives an answer.

use super::{Kind, MediaFacts};
use crate::path::type_by_name;

/// How many leading bytes [`sniff`] wants: enough for the magic numbers of every recognised
/// type, the headers that carry PNG/GIF/WebP/BMP dimensions, and the JPEG `SOF` marker of
/// typical files (after their EXIF/ICC segments). Fewer bytes are fine (a short file, a
/// first chunk): the answer is then only less complete.
pub const SNIFF_BYTES: usize = 64 * 1024;

/// The MIME type of anything unrecognised.
const OCTET_STREAM: &str = "application/octet-stream";

/// The longest MIME type name part accepted from a hint (RFC 6838 §4.2).
const MAX_NAME: usize = 127;

/// The facts that `head` (a file's first bytes, ideally [`SNIFF_BYTES`] of them, fewer for a
/// shorter file) shows, given the client's `Content-Type` `hint` and the `filename` (only
/// its extension is used).
///
/// ```
/// use tower_uploads::media::{Kind, sniff};
///
/// let facts = sniff(b"%PDF-1.7\n", Some("text/plain"), "report.pdf");
/// assert_eq!((facts.kind, facts.mime_type.as_str()), (Kind::Other, "application/pdf"));
/// // A hint never makes a file media:
/// let facts = sniff(b"not an image", Some("image/png"), "cat.png");
/// assert_eq!((facts.kind, facts.mime_type.as_str()), (Kind::Other, "image/png"));
/// assert!(!facts.recognised);
/// ```
pub fn sniff(head: &[u8], hint: Option<&str>, filename: &str) -> MediaFacts {
    if let Some((width, height)) = sniff_svg(head) {
        return facts(Kind::Image, "image/svg+xml".to_owned(), true, width, height);
    }
    if let Some(t) = infer::get(head).filter(|t| plausible(head, t.mime_type())) {
        let kind = match t.matcher_type() {
            infer::MatcherType::Image => Kind::Image,
            infer::MatcherType::Video => Kind::Video,
            infer::MatcherType::Audio => Kind::Audio,
            _ => Kind::Other,
        };
        let (width, height) = if kind == Kind::Image {
            image_size(head, t.mime_type())
        } else {
            (None, None)
        };
        return facts(kind, t.mime_type().to_owned(), true, width, height);
    }
    let mime = hint
        .and_then(valid_mime)
        .or_else(|| type_by_name(filename).map(str::to_owned))
        .unwrap_or_else(|| OCTET_STREAM.to_owned());
    facts(Kind::Other, mime, false, None, None)
}

/// The MIME type that upload conditions (PROTOCOL.md §5) compare against: what the bytes
/// showed, or `application/octet-stream` when they were not recognised (whatever the hint
/// or the extension said).
#[doc(hidden)]
pub fn mime_for_conditions(facts: &MediaFacts) -> &str {
    if facts.recognised {
        &facts.mime_type
    } else {
        OCTET_STREAM
    }
}

fn facts(
    kind: Kind,
    mime_type: String,
    recognised: bool,
    width: Option<u32>,
    height: Option<u32>,
) -> MediaFacts {
    MediaFacts {
        kind,
        mime_type,
        // A header that says 0 says nothing: an image has at least one pixel.
        width: width.filter(|&w| w > 0),
        height: height.filter(|&h| h > 0),
        duration: None,
        fps: None,
        frames: None,
        bitrate: None,
        codec: None,
        container: None,
        recognised,
    }
}

/// Rejects infer's answers that rest on a prefix plain text can start with.
fn plausible(head: &[u8], mime: &str) -> bool {
    match mime {
        // "GIF" alone: require the full `GIF87a` / `GIF89a` signature.
        "image/gif" => head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a"),
        // "BM" alone: require a known DIB header size at offset 14.
        "image/bmp" => head
            .get(14..18)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .is_some_and(|n| matches!(n, 12 | 16 | 40 | 52 | 56 | 64 | 108 | 124)),
        _ => true,
    }
}

fn image_size(head: &[u8], mime: &str) -> (Option<u32>, Option<u32>) {
    if mime == "image/bmp" {
        return bmp_size(head);
    }
    match imagesize::blob_size(head) {
        Ok(size) => (
            u32::try_from(size.width).ok(),
            u32::try_from(size.height).ok(),
        ),
        Err(_) => (None, None),
    }
}

/// BMP dimensions (imagesize reads a negative, top-down height as a huge number).
fn bmp_size(head: &[u8]) -> (Option<u32>, Option<u32>) {
    let le32 = |at: usize| {
        head.get(at..at + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]).unsigned_abs())
    };
    let le16 = |at: usize| {
        head.get(at..at + 2)
            .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
    };
    match le32(14) {
        Some(12) => (le16(18), le16(20)),
        Some(_) => (le32(18), le32(22)),
        None => (None, None),
    }
}

/// A hint that is a syntactically valid MIME type (`type/subtype`, RFC 6838 restricted
/// names), lowercased and without parameters.
fn valid_mime(hint: &str) -> Option<String> {
    let essence = hint.split(';').next().unwrap_or("").trim();
    let (ty, sub) = essence.split_once('/')?;
    (restricted_name(ty) && restricted_name(sub)).then(|| essence.to_ascii_lowercase())
}

/// `restricted-name` of RFC 6838 §4.2.
fn restricted_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
}

// ---- SVG ----

/// `Some((width, height))` when `head` is an SVG document.
fn sniff_svg(head: &[u8]) -> Option<(Option<u32>, Option<u32>)> {
    let mut s = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    // Skip the prolog. Every turn consumes at least two bytes, so this ends.
    loop {
        s = s.trim_ascii_start();
        if let Some(rest) = s.strip_prefix(b"<?") {
            s = after(rest, b"?>")?;
        } else if let Some(rest) = s.strip_prefix(b"<!--") {
            s = after(rest, b"-->")?;
        } else if s.len() >= 9 && s[..9].eq_ignore_ascii_case(b"<!DOCTYPE") {
            s = after_doctype(&s[9..])?;
        } else {
            break;
        }
    }
    let rest = s.strip_prefix(b"<svg")?;
    match rest.first() {
        Some(c) if c.is_ascii_whitespace() || *c == b'>' || *c == b'/' => {}
        _ => return None,
    }
    let attrs = svg_root_attributes(rest);
    Some(svg_dimensions(
        attrs.width.and_then(svg_length),
        attrs.height.and_then(svg_length),
        attrs.view_box.and_then(view_box),
    ))
}

/// What follows the first `needle` in `s`.
fn after<'a>(s: &'a [u8], needle: &[u8]) -> Option<&'a [u8]> {
    let at = s.windows(needle.len()).position(|w| w == needle)?;
    s.get(at + needle.len()..)
}

/// What follows a doctype's closing `>` (skipping an internal subset and quoted strings).
fn after_doctype(s: &[u8]) -> Option<&[u8]> {
    let mut depth = 0usize;
    let mut quote = None;
    for (i, &c) in s.iter().enumerate() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(c),
            (None, b'[') => depth += 1,
            (None, b']') => depth = depth.saturating_sub(1),
            (None, b'>') if depth == 0 => return s.get(i + 1..),
            _ => {}
        }
    }
    None
}

#[derive(Default)]
struct SvgAttributes<'a> {
    width: Option<&'a str>,
    height: Option<&'a str>,
    view_box: Option<&'a str>,
}

/// The `width`, `height` and `viewBox` attributes of the start tag whose attributes begin
/// `tag` (which runs to the end of the buffer; a truncated tag gives what it has).
fn svg_root_attributes(tag: &[u8]) -> SvgAttributes<'_> {
    let mut out = SvgAttributes::default();
    let mut i = 0;
    let n = tag.len();
    while i < n {
        while i < n && tag[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n || tag[i] == b'>' || tag[i] == b'/' {
            break;
        }
        let start = i;
        while i < n && !tag[i].is_ascii_whitespace() && !b"=>/".contains(&tag[i]) {
            i += 1;
        }
        let name = &tag[start..i];
        while i < n && tag[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n || tag[i] != b'=' {
            if name.is_empty() {
                // A stray byte; step over it.
                i += 1;
            }
            continue;
        }
        i += 1;
        while i < n && tag[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = match tag.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let Some(len) = tag[i + 1..].iter().position(|&c| c == q) else {
                    break; // truncated
                };
                let v = &tag[i + 1..i + 1 + len];
                i += len + 2;
                v
            }
            Some(_) => {
                let start = i;
                while i < n && !tag[i].is_ascii_whitespace() && tag[i] != b'>' {
                    i += 1;
                }
                &tag[start..i]
            }
            None => break,
        };
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        match name {
            b"width" => out.width = Some(value),
            b"height" => out.height = Some(value),
            b"viewBox" => out.view_box = Some(value),
            _ => {}
        }
    }
    out
}

/// A `width`/`height` that is a plain number or a number of `px`.
fn svg_length(v: &str) -> Option<f64> {
    let v = v.trim();
    let v = v.strip_suffix("px").unwrap_or(v);
    let digits = v.strip_prefix('+').unwrap_or(v);
    let plain = !digits.is_empty()
        && digits.bytes().any(|c| c.is_ascii_digit())
        && digits.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        && digits.bytes().filter(|&c| c == b'.').count() <= 1;
    if !plain {
        return None;
    }
    digits
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0)
}

/// The width and height of a `viewBox` (`min-x min-y width height`, separated by whitespace
/// and/or commas).
fn view_box(v: &str) -> Option<(f64, f64)> {
    let mut nums = v
        .split(|c: char| c.is_ascii_whitespace() || c == ',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.bytes()
                .all(|c| c.is_ascii_digit() || b".eE+-".contains(&c))
                .then(|| p.parse::<f64>().ok())
                .flatten()
                .filter(|x| x.is_finite())
        });
    let (_, _, w, h) = (nums.next()??, nums.next()??, nums.next()??, nums.next()??);
    if nums.next().is_some() || w <= 0.0 || h <= 0.0 {
        return None;
    }
    Some((w, h))
}

fn svg_dimensions(
    width: Option<f64>,
    height: Option<f64>,
    view_box: Option<(f64, f64)>,
) -> (Option<u32>, Option<u32>) {
    let (w, h) = match (width, height, view_box) {
        (Some(w), Some(h), _) => (Some(w), Some(h)),
        // One side given: the other follows the viewBox's aspect ratio.
        (Some(w), None, Some((vw, vh))) => (Some(w), Some(w * vh / vw)),
        (None, Some(h), Some((vw, vh))) => (Some(h * vw / vh), Some(h)),
        (None, None, Some((vw, vh))) => (Some(vw), Some(vh)),
        (w, h, None) => (w, h),
    };
    (w.and_then(pixels), h.and_then(pixels))
}

fn pixels(x: f64) -> Option<u32> {
    if !(x.is_finite() && x > 0.0) {
        return None;
    }
    let r = x.round();
    // `as` saturates; reject what does not fit instead.
    (r <= f64::from(u32::MAX)).then(|| (r as u32).max(1))
}

#[cfg(test)]
mod tests {

    /// The type by name is mime_guess's answer for the path, whatever came before it on the
    /// thread (its memory of the last extension).
    #[test]
    fn type_by_name_is_mime_guess() {
        let names = [
            "a.png",
            "b.jpg",
            "c.png",
            "x.PNG",
            "x.png",
            "noext",
            ".hidden",
            ".hidden.txt",
            "a.",
            "..",
            "a.tar.gz",
            "a.gz",
            "weird.verylongextension",
            "v.mp4",
            "v.mp4",
            "z.unknownext",
            "z.unknownext",
            "a.b.c.d.pdf",
            "é.txt",
            "f.tx",
            "f.txt",
            "f.t",
        ];
        for round in 0..2 {
            for name in names {
                let want = mime_guess::from_path(name).first_raw();
                assert_eq!(type_by_name(name), want, "{name} (round {round})");
            }
        }
    }

    /// Found by the `probe_media` fuzz target in CI: a Photoshop header declaring 0 × 0
    /// (the crash input, and the same without its first byte).
    #[test]
    fn zero_dimensions_are_unknown() {
        let mut crash = vec![0xd8, 0x38, 0x42, 0x50, 0x53, 0xff, 0xd8];
        crash.resize(0x34, 0);
        crash.extend_from_slice(&[0xff, 0xff, 0xd8]);
        for data in [&crash[..], &crash[1..]] {
            let f = sniff(data, None, "x.psd");
            assert!(f.width != Some(0) && f.height != Some(0), "{f:?}");
            let probed = futures_util::FutureExt::now_or_never(crate::media::probe(
                &crate::media::MemorySource::new(data.to_vec()),
                None,
                "x.psd",
            ))
            .expect("a memory probe never waits");
            assert!(
                probed.width != Some(0) && probed.height != Some(0),
                "{probed:?}"
            );
        }
    }
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        v.extend_from_slice(&13u32.to_be_bytes());
        v.extend_from_slice(b"IHDR");
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&h.to_be_bytes());
        v.extend_from_slice(&[8, 6, 0, 0, 0]);
        v.extend_from_slice(&[0, 0, 0, 0]); // CRC (not checked)
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(b"IEND");
        v.extend_from_slice(&[0xAE, 0x42, 0x60, 0x82]);
        v
    }

    fn gif(w: u16, h: u16) -> Vec<u8> {
        let mut v = b"GIF89a".to_vec();
        v.extend_from_slice(&w.to_le_bytes());
        v.extend_from_slice(&h.to_le_bytes());
        v.extend_from_slice(&[0, 0, 0, b';']);
        v
    }

    fn jpeg(w: u16, h: u16) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        // APP0 JFIF
        v.extend_from_slice(&[0xFF, 0xE0, 0, 16]);
        v.extend_from_slice(b"JFIF\0");
        v.extend_from_slice(&[1, 1, 0, 0, 1, 0, 1, 0, 0]);
        // a COM segment before SOF0
        v.extend_from_slice(&[0xFF, 0xFE, 0, 7]);
        v.extend_from_slice(b"hello");
        // SOF0
        v.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8]);
        v.extend_from_slice(&h.to_be_bytes());
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        v.extend_from_slice(&[0xFF, 0xD9]);
        v
    }

    fn bmp(w: i32, h: i32) -> Vec<u8> {
        let mut v = b"BM".to_vec();
        v.extend_from_slice(&(54u32 + 4).to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&54u32.to_le_bytes());
        v.extend_from_slice(&40u32.to_le_bytes());
        v.extend_from_slice(&w.to_le_bytes());
        v.extend_from_slice(&h.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&24u16.to_le_bytes());
        v.extend_from_slice(&[0; 24]);
        v.extend_from_slice(&[0; 4]);
        v
    }

    fn webp_vp8x(w: u32, h: u32) -> Vec<u8> {
        let mut v = b"RIFF".to_vec();
        v.extend_from_slice(&22u32.to_le_bytes());
        v.extend_from_slice(b"WEBPVP8X");
        v.extend_from_slice(&10u32.to_le_bytes());
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(&(w - 1).to_le_bytes()[..3]);
        v.extend_from_slice(&(h - 1).to_le_bytes()[..3]);
        v
    }

    fn mp4() -> Vec<u8> {
        let mut v = 24u32.to_be_bytes().to_vec();
        v.extend_from_slice(b"ftypisom");
        v.extend_from_slice(&0x200u32.to_be_bytes());
        v.extend_from_slice(b"isomavc1");
        v.extend_from_slice(&8u32.to_be_bytes());
        v.extend_from_slice(b"free");
        v
    }

    fn wav() -> Vec<u8> {
        let mut v = b"RIFF".to_vec();
        v.extend_from_slice(&36u32.to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes()); // PCM
        v.extend_from_slice(&1u16.to_le_bytes()); // mono
        v.extend_from_slice(&8000u32.to_le_bytes());
        v.extend_from_slice(&16000u32.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&16u16.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    }

    fn mp3() -> Vec<u8> {
        let mut v = b"ID3\x03\x00\x00\x00\x00\x00\x00".to_vec();
        v.extend_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
        v.extend_from_slice(&[0; 32]);
        v
    }

    fn zip() -> Vec<u8> {
        let mut v = b"PK\x03\x04".to_vec();
        v.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        v.extend_from_slice(&[0; 16]);
        v.extend_from_slice(b"a.txt");
        v
    }

    /// Bytes that no signature matches (a fixed LCG, first byte forced away from magic).
    fn random(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut v: Vec<u8> = (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (x >> 33) as u8
            })
            .collect();
        if let Some(b) = v.first_mut() {
            *b = 0x13;
        }
        v
    }

    fn svg(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    type Row = (
        &'static str,
        Vec<u8>,
        Option<&'static str>,
        &'static str,
        Kind,
        &'static str,
        bool,
        Option<u32>,
        Option<u32>,
    );

    #[test]
    fn table() {
        use Kind::*;
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            // name, bytes, hint, filename, kind, type, recognised, width, height
            ("png", png(640, 480), None, "a", Image, "image/png", true, Some(640), Some(480)),
            ("png, lying hint", png(3, 2), Some("video/mp4"), "a.mp4", Image, "image/png", true, Some(3), Some(2)),
            ("gif", gif(17, 9), None, "a.gif", Image, "image/gif", true, Some(17), Some(9)),
            ("jpeg sof0", jpeg(1920, 1080), None, "a.jpg", Image, "image/jpeg", true, Some(1920), Some(1080)),
            ("jpeg, no sof", jpeg(1, 1)[..20].to_vec(), None, "a.jpg", Image, "image/jpeg", true, None, None),
            ("bmp", bmp(31, 7), None, "a.bmp", Image, "image/bmp", true, Some(31), Some(7)),
            ("bmp top-down", bmp(31, -7), None, "a.bmp", Image, "image/bmp", true, Some(31), Some(7)),
            ("webp vp8x", webp_vp8x(1000, 300), None, "a.webp", Image, "image/webp", true, Some(1000), Some(300)),
            ("mp4", mp4(), Some("image/png"), "a.png", Video, "video/mp4", true, None, None),
            ("wav", wav(), None, "a", Audio, "audio/x-wav", true, None, None),
            ("mp3 id3", mp3(), None, "a", Audio, "audio/mpeg", true, None, None),
            ("pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec(), Some("image/png"), "a.png", Other, "application/pdf", true, None, None),
            ("zip", zip(), None, "a.bin", Other, "application/zip", true, None, None),
            // SVG
            ("svg plain", svg(r#"<svg xmlns="http://www.w3.org/2000/svg" width="100" height="50"></svg>"#), None, "a", Image, "image/svg+xml", true, Some(100), Some(50)),
            ("svg px", svg(r#"<svg width="100px" height='20.4px'/>"#), None, "a", Image, "image/svg+xml", true, Some(100), Some(20)),
            ("svg viewBox", svg(r#"<svg viewBox="0 0 300 150" xmlns="http://www.w3.org/2000/svg">"#), None, "a", Image, "image/svg+xml", true, Some(300), Some(150)),
            ("svg viewBox commas", svg(r#"<svg viewBox="-5,-5, 24.6,12">"#), None, "a", Image, "image/svg+xml", true, Some(25), Some(12)),
            ("svg percent → viewBox", svg(r#"<svg width="100%" height="100%" viewBox="0 0 64 32">"#), None, "a", Image, "image/svg+xml", true, Some(64), Some(32)),
            ("svg em, no viewBox", svg(r#"<svg width="10em" height="2em">"#), None, "a", Image, "image/svg+xml", true, None, None),
            ("svg width + viewBox ratio", svg(r#"<svg width="200" viewBox="0 0 100 50">"#), None, "a", Image, "image/svg+xml", true, Some(200), Some(100)),
            ("svg prolog", svg("\u{feff}<?xml version=\"1.0\"?>\n<!-- by hand -->\n<!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" \"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd\" [ <!ENTITY a \">\"> ]>\n<svg\n  width=\"8\"\n  height=\"9\">"),
            None,
            "a",
            Image,
            "image/svg+xml",
            true,
            Some(8),
            Some(9),
            ),
            ("svg no size", svg("<svg>"), None, "a", Image, "image/svg+xml", true, None, None),
            ("svg truncated tag", svg(r#"<svg width="12" height="3"#), None, "a", Image, "image/svg+xml", true, Some(12), None),
            ("svg bad viewBox", svg(r#"<svg viewBox="0 0 nan 5">"#), None, "a", Image, "image/svg+xml", true, None, None),
            ("svg huge", svg(r#"<svg width="1e400" height="99999999999">"#), None, "a", Image, "image/svg+xml", true, None, None),
            ("svgfoo is not svg", svg("<svgfoo>"), None, "a.txt", Other, "text/plain", false, None, None),
            ("svg after unterminated comment", svg("<!-- <svg width=\"1\">"), None, "a", Other, "text/html", true, None, None),
            ("xml, not svg", svg("<?xml version=\"1.0\"?><feed/>"), None, "a", Other, "text/xml", true, None, None),
            ("html", svg("<html><body></body></html>"), Some("image/svg+xml"), "a.svg", Other, "text/html", true, None, None),
            // Unrecognised bytes: hint, extension, default.
            ("random, image hint", random(256), Some("image/png"), "a", Other, "image/png", false, None, None),
            ("random, text hint", random(256), Some("text/plain; charset=utf-8"), "a", Other, "text/plain", false, None, None),
            ("random, upper hint", random(256), Some(" Text/Plain "), "a", Other, "text/plain", false, None, None),
            ("random, ../etc hint, txt", random(256), Some("../etc"), "a.txt", Other, "text/plain", false, None, None),
            ("random, bare hint, json", random(256), Some("text"), "a.json", Other, "application/json", false, None, None),
            ("random, empty hint", random(256), Some(""), "a", Other, "application/octet-stream", false, None, None),
            ("random, no hint, png ext", random(256), None, "cat.png", Other, "image/png", false, None, None),
            ("random, nothing", random(256), None, "noext", Other, "application/octet-stream", false, None, None),
            ("empty", Vec::new(), None, "", Other, "application/octet-stream", false, None, None),
            ("empty, hint", Vec::new(), Some("application/json"), "a", Other, "application/json", false, None, None),
            ("text starting GIF", b"GIFs are fun\n".to_vec(), None, "a.txt", Other, "text/plain", false, None, None),
            ("text starting BM", b"BMI table: 18.5 to 25, and more lines".to_vec(), None, "a.txt", Other, "text/plain", false, None, None),
            // Hostile / truncated headers.
            ("png sig only", png(1, 1)[..8].to_vec(), None, "a", Image, "image/png", true, None, None),
            ("gif truncated", gif(5, 5)[..7].to_vec(), None, "a", Image, "image/gif", true, None, None),
            ("webp truncated", webp_vp8x(5, 5)[..16].to_vec(), None, "a", Image, "image/webp", true, None, None),
            ("jpeg zero-length segment", vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 0, 0], None, "a", Image, "image/jpeg", true, None, None),
            ("jpeg segment past end", vec![0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF, 1, 2, 3], None, "a", Image, "image/jpeg", true, None, None),
        ];
        for (name, bytes, hint, filename, kind, mime, recognised, w, h) in rows {
            let f = sniff(&bytes, hint, filename);
            assert_eq!(f.kind, kind, "{name}: kind");
            assert_eq!(f.mime_type, mime, "{name}: type");
            assert_eq!(f.recognised, recognised, "{name}: recognised");
            assert_eq!((f.width, f.height), (w, h), "{name}: dimensions");
            let cond = mime_for_conditions(&f);
            if recognised {
                assert_eq!(cond, mime, "{name}: conditions");
            } else {
                assert_eq!(cond, "application/octet-stream", "{name}: conditions");
            }
        }
    }

    #[test]
    fn random_is_unrecognised() {
        assert!(infer::get(&random(256)).is_none());
    }

    /// Every prefix of every sample, and every sample with a corrupted byte, gives an
    /// answer without panicking.
    #[test]
    fn hostile_inputs_never_panic() {
        let samples = [
            png(640, 480),
            gif(1, 1),
            jpeg(100, 100),
            bmp(3, 3),
            webp_vp8x(9, 9),
            mp4(),
            wav(),
            mp3(),
            zip(),
            svg("\u{feff}<?xml?><!DOCTYPE svg [<!x>]><!----><svg width='1' viewBox=\"0 0 1 1\">"),
        ];
        for s in &samples {
            for n in 0..=s.len() {
                let _ = sniff(&s[..n], Some("image/png"), "x.png");
            }
            for i in 0..s.len() {
                for b in [0x00, 0xFF, b'<', b'"'] {
                    let mut t = s.clone();
                    t[i] = b;
                    let _ = sniff(&t, None, "");
                }
            }
        }
    }

    #[test]
    fn truncation_at_sniff_bytes_keeps_dimensions() {
        // A JPEG whose SOF0 comes after a large APP1 segment, cut at SNIFF_BYTES.
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE1, 0xC0, 0x00];
        v.resize(v.len() + 0xC000 - 2, 0);
        v.extend_from_slice(&jpeg(33, 44)[2..]);
        v.resize(SNIFF_BYTES * 2, 0);
        let f = sniff(&v[..SNIFF_BYTES], None, "a.jpg");
        assert_eq!(
            (f.kind, f.width, f.height),
            (Kind::Image, Some(33), Some(44))
        );
    }

    #[test]
    fn hint_validation() {
        let cases = [
            ("image/png", Some("image/png")),
            (
                "application/vnd.api+json; charset=utf-8",
                Some("application/vnd.api+json"),
            ),
            ("APPLICATION/JSON", Some("application/json")),
            ("../etc", None),
            ("text/", None),
            ("/plain", None),
            ("text/plain/x", None),
            ("text/pl ain", None),
            ("text\u{0}/plain", None),
            ("tëxt/plain", None),
            ("", None),
        ];
        for (hint, want) in cases {
            assert_eq!(valid_mime(hint).as_deref(), want, "{hint:?}");
        }
        let long = format!("a/{}", "b".repeat(128));
        assert_eq!(valid_mime(&long), None);
    }
}
