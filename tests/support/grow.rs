//! Grows a small media file to a given size the way its format allows (padding where a
//! parser skips without reading), for checks and benchmarks that probe cost does not grow with
//! file size. Shared by `tests/probe_ffprobe.rs` and `benches/probe.rs`.
#![allow(dead_code)]

/// 1 MiB.
pub const MIB: usize = 1 << 20;
/// 1 GiB.
pub const GIB: usize = 1 << 30;

/// `orig` grown to `total` bytes the way its format allows, without touching most pages (the
/// buffer is zeroed lazily by the allocator).
pub fn grow(format: &str, orig: &[u8], total: usize) -> Vec<u8> {
    let mut v = vec![0u8; total];
    let pad = total - orig.len();
    match format {
        // ftyp, free, mdat, then a `free` box of `pad` bytes, then moov at the very end.
        "mp4" => {
            let moov = find_box(orig, b"moov").unwrap();
            v[..moov].copy_from_slice(&orig[..moov]);
            v[moov..moov + 4].copy_from_slice(&(pad as u32).to_be_bytes());
            v[moov + 4..moov + 8].copy_from_slice(b"free");
            v[moov + pad..].copy_from_slice(&orig[moov..]);
        }
        // A longer `data` chunk (silence), its size and the RIFF size patched.
        "wav" => {
            v[..orig.len()].copy_from_slice(orig);
            let data = orig.windows(4).position(|w| w == b"data").unwrap();
            let len = (total - data - 8) as u32;
            v[data + 4..data + 8].copy_from_slice(&len.to_le_bytes());
            v[4..8].copy_from_slice(&((total - 8) as u32).to_le_bytes());
        }
        // A Void element before the first Cluster, the Segment's 8-byte size patched.
        "webm" => {
            let cluster = orig
                .windows(4)
                .position(|w| w == [0x1F, 0x43, 0xB6, 0x75])
                .unwrap();
            let seg = orig
                .windows(4)
                .position(|w| w == [0x18, 0x53, 0x80, 0x67])
                .unwrap();
            v[..cluster].copy_from_slice(&orig[..cluster]);
            assert_eq!(orig[seg + 4], 0x01, "an 8-byte Segment size");
            let size =
                u64::from_be_bytes(orig[seg + 4..seg + 12].try_into().unwrap()) & ((1 << 56) - 1);
            let size = (size + pad as u64) | (1 << 56);
            v[seg + 4..seg + 12].copy_from_slice(&size.to_be_bytes());
            v[cluster] = 0xEC;
            v[cluster + 1..cluster + 9]
                .copy_from_slice(&(((pad - 9) as u64) | (1 << 56)).to_be_bytes());
            v[cluster + pad..].copy_from_slice(&orig[cluster..]);
        }
        // Zeros before the last page (an Ogg reader resyncs on the next capture pattern).
        "ogg" => {
            let last = orig.windows(4).rposition(|w| w == b"OggS").unwrap();
            v[..last].copy_from_slice(&orig[..last]);
            v[last + pad..].copy_from_slice(&orig[last..]);
        }
        // Zeros after the stream.
        _ => v[..orig.len()].copy_from_slice(orig),
    }
    v
}

pub fn find_box(b: &[u8], kind: &[u8; 4]) -> Option<usize> {
    let mut at = 0;
    while at + 8 <= b.len() {
        let size = u32::from_be_bytes(b[at..at + 4].try_into().ok()?) as usize;
        if &b[at + 4..at + 8] == kind {
            return Some(at);
        }
        if size < 8 {
            return None;
        }
        at += size;
    }
    None
}
