//! Hostile media, one or more for every parser of `media::probe` (security finding 1: a
//! probe's work must be bounded by the bytes it reads): counts that no byte carries,
//! structures laid over one another, the smallest blocks there are, as many as fit. Used by
//! `tests/probe_work.rs` (the work bound) and `tests/media_dos.rs` (a server under them).

/// Wraps `body` in an ISO BMFF box.
pub fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = (8 + body.len() as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

/// A full box (version 0) with `flags`.
pub fn full(kind: &[u8; 4], flags: u32, body: &[u8]) -> Vec<u8> {
    boxed(kind, &[&flags.to_be_bytes()[..], body].concat())
}

/// The finding's MP4: `mvhd` duration 0, `mvex`/`trex`, then a `moof` whose `traf` holds
/// `runs` `trun`s of flags 0 and 2³² − 1 samples.
pub fn endless_runs(runs: usize) -> Vec<u8> {
    let mut mvhd = vec![0u8; 96];
    mvhd[8..12].copy_from_slice(&1000u32.to_be_bytes());
    let trex = [1u32, 1, 1000, 0, 0].map(u32::to_be_bytes).concat();
    let moov = [
        full(b"mvhd", 0, &mvhd),
        boxed(b"mvex", &full(b"trex", 0, &trex)),
    ]
    .concat();
    let mut traf = full(b"tfhd", 0, &1u32.to_be_bytes());
    for _ in 0..runs {
        traf.extend(full(b"trun", 0, &u32::MAX.to_be_bytes()));
    }
    let moof = [full(b"mfhd", 0, &1u32.to_be_bytes()), boxed(b"traf", &traf)].concat();
    [
        boxed(b"ftyp", b"isom\0\0\0\0isom"),
        boxed(b"moov", &moov),
        boxed(b"moof", &moof),
    ]
    .concat()
}

/// Many `moof`s of the finding's kind, as one file of about `len` bytes.
pub fn endless_fragments(len: usize) -> Vec<u8> {
    let one = endless_runs(64);
    let moof_at = one.windows(4).position(|w| w == b"moof").unwrap() - 4;
    let mut f = one.clone();
    while f.len() < len {
        f.extend_from_slice(&one[moof_at..]);
    }
    f
}

/// An MP4 whose `moov` holds a track with tables of 2³² − 1 claimed entries.
pub fn huge_tables() -> Vec<u8> {
    let counted = |kind: &[u8; 4], extra: &[u8]| {
        full(
            kind,
            0,
            &[extra, &u32::MAX.to_be_bytes()[..], &[0; 16]].concat(),
        )
    };
    let stbl = [
        counted(b"stsd", &[]),
        counted(b"stts", &[]),
        counted(b"stsz", &[0; 4]),
        counted(b"stsc", &[]),
        counted(b"stco", &[]),
        counted(b"stss", &[]),
        counted(b"ctts", &[]),
        counted(b"sbgp", b"roll"),
        counted(b"sgpd", b"roll"),
    ]
    .concat();
    let mut hdlr = vec![0u8; 4];
    hdlr.extend_from_slice(b"vide");
    hdlr.extend_from_slice(&[0; 13]);
    let mdia = [
        full(b"mdhd", 0, &[0u8; 20]),
        full(b"hdlr", 0, &hdlr),
        boxed(b"minf", &boxed(b"stbl", &stbl)),
    ]
    .concat();
    let trak = [full(b"tkhd", 0, &[0u8; 80]), boxed(b"mdia", &mdia)].concat();
    [
        boxed(b"ftyp", b"isom\0\0\0\0isom"),
        boxed(b"moov", &boxed(b"trak", &trak)),
    ]
    .concat()
}

/// An EBML element.
pub fn ebml(id: &[u8], body: &[u8]) -> Vec<u8> {
    let mut e = id.to_vec();
    e.push(0x01);
    e.extend_from_slice(&(body.len() as u64).to_be_bytes()[1..]);
    e.extend_from_slice(body);
    e
}

pub fn mkv(before_segment: usize) -> Vec<u8> {
    let mut f = ebml(&[0x1A, 0x45, 0xDF, 0xA3], &ebml(&[0x42, 0x82], b"webm"));
    // Void elements of two bytes each.
    for _ in 0..before_segment {
        f.extend_from_slice(&[0xEC, 0x80]);
    }
    let info = ebml(
        &[0x15, 0x49, 0xA9, 0x66],
        &ebml(&[0x44, 0x89], &1000f64.to_be_bytes()),
    );
    let video = ebml(
        &[0xE0],
        &[ebml(&[0xB0], &[1]), ebml(&[0xBA], &[1])].concat(),
    );
    let track = ebml(
        &[0xAE],
        &[ebml(&[0x83], &[1]), ebml(&[0x86], b"V_VP9"), video].concat(),
    );
    // A Tracks element of many empty entries, then the real one.
    let mut entries = [0xAE, 0x80].repeat(10_000);
    entries.extend(track);
    let tracks = ebml(&[0x16, 0x54, 0xAE, 0x6B], &entries);
    f.extend(ebml(&[0x18, 0x53, 0x80, 0x67], &[info, tracks].concat()));
    f
}

pub fn mp3(frames: usize) -> Vec<u8> {
    let mut f = b"ID3\x04\0\0\0\0\0\x0a".to_vec();
    f.extend_from_slice(&[0; 10]);
    let mut frame = vec![0u8; 417];
    frame[..4].copy_from_slice(&0xFFFB_9064u32.to_be_bytes());
    for _ in 0..frames {
        f.extend_from_slice(&frame);
    }
    f
}

pub fn wav(chunks: usize) -> Vec<u8> {
    let mut f = b"RIFF\0\0\0\0WAVE".to_vec();
    for _ in 0..chunks {
        f.extend_from_slice(b"junk\0\0\0\0");
    }
    f.extend_from_slice(b"fmt \x10\0\0\0\x01\0\x01\0\x40\x1f\0\0\x80\x3e\0\0\x02\0\x10\0");
    f.extend_from_slice(b"data\xff\xff\xff\xff");
    f.resize(f.len() + 1000, 0);
    f
}

pub fn flac() -> Vec<u8> {
    let mut b = b"fLaC\x80\0\0\x22".to_vec();
    b.extend_from_slice(&[0x10, 0, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    let v: u64 = (44_100 << 44) | (1 << 41) | (15 << 36) | u64::from(u32::MAX);
    b.extend_from_slice(&v.to_be_bytes());
    b.extend_from_slice(&[0; 16]);
    b
}

/// An Ogg beginning-of-stream page (Opus, serial `\0Ogg`, CRC not needed there), then
/// `OggS\0` repeated: a page header of that serial every 5 bytes, ~7 KiB long each.
pub fn ogg_overlapping(tail: usize) -> Vec<u8> {
    let mut head = b"OpusHead\x01\x02".to_vec();
    head.extend_from_slice(&312u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&[0, 0, 0]);
    let mut p = b"OggS\0\x02".to_vec();
    p.extend_from_slice(&0u64.to_le_bytes());
    p.extend_from_slice(b"\0Ogg");
    p.extend_from_slice(&[0; 8]);
    p.push(1);
    p.push(head.len() as u8);
    p.extend_from_slice(&head);
    p.extend(b"OggS\0".repeat(tail / 5));
    p
}

/// A GIF whose data is the smallest blocks there are, `len` bytes of them: extensions with
/// one-byte sub-blocks.
pub fn gif_tiny_blocks(len: usize) -> Vec<u8> {
    let mut f = b"GIF89a\x01\0\x01\0\0\0\0".to_vec();
    f.extend_from_slice(b"\x21\xF9\x04\0\x0a\0\0\0");
    f.extend_from_slice(b"\x2C\0\0\0\0\x01\0\x01\0\0\x02\x01\x00\x00");
    f.extend_from_slice(b"\x21\xFE");
    while f.len() < len {
        f.extend_from_slice(b"\x01\x00");
    }
    f.extend_from_slice(b"\x00\x3B");
    f
}

pub fn webp_tiny_chunks(len: usize) -> Vec<u8> {
    let mut f = b"RIFF\xff\xff\xff\x7fWEBPVP8X\x0a\0\0\0\x02\0\0\0\0\0\0\0\0\0".to_vec();
    while f.len() < len {
        f.extend_from_slice(b"ANMF\0\0\0\0");
    }
    f
}

pub fn jpeg_fill(len: usize) -> Vec<u8> {
    let mut f = b"\xFF\xD8".to_vec();
    f.resize(len, 0xFF);
    f
}

pub fn tiff_big_directory() -> Vec<u8> {
    let mut f = b"II*\0\x08\0\0\0\xff\xff".to_vec();
    f.resize(8 + 2 + 65_535 * 12, 0);
    f
}

pub fn svg_prolog(len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    while f.len() < len {
        f.extend_from_slice(b"<!---->");
    }
    f.extend_from_slice(b"<svg width=\"1\" height=\"1\"/>");
    f
}

/// A WebM whose `Tracks` element states 1 MiB and holds 20 bytes (the file ends there): its
/// work is what it holds (found by fuzz `probe_mkv`: the stated size was counted).
pub fn mkv_past_the_end() -> Vec<u8> {
    let mut f = ebml(&[0x1A, 0x45, 0xDF, 0xA3], &ebml(&[0x42, 0x82], b"webm"));
    f.extend_from_slice(&[
        0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    f.extend_from_slice(&[0x16, 0x54, 0xAE, 0x6B, 0x10, 0x10, 0x00, 0x00]);
    f.extend_from_slice(&[0xAE, 0x80].repeat(10));
    f
}

/// A TIFF whose first directory is at offset 0 and so states 18 761 entries (`II`), of which
/// the file holds none (found by fuzz `probe_image`: the stated count was counted as work).
pub fn tiff_truncated_directory() -> Vec<u8> {
    b"II*\0\0\0\0\0\0\0\0".to_vec()
}

/// An MP4 whose `moov` is as large as a probe reads (16 MiB less a little): a video track
/// whose `stsz` lists ~4 million sample sizes. Legitimate work, bounded by its bytes, but
/// the longest a probe spends without a read in between (the whole `moov` is decoded at once).
pub fn big_moov() -> Vec<u8> {
    let n: u32 = (16 << 20) / 4 - 1024;
    let mut stsz = vec![0u8; 4];
    stsz.extend_from_slice(&n.to_be_bytes());
    stsz.resize(8 + 4 * n as usize, 0x11);
    let mut hdlr = vec![0u8; 4];
    hdlr.extend_from_slice(b"vide");
    hdlr.extend_from_slice(&[0; 13]);
    let stbl = [
        full(b"stsd", 0, &0u32.to_be_bytes()),
        full(b"stts", 0, &0u32.to_be_bytes()),
        full(b"stsz", 0, &stsz),
    ]
    .concat();
    let mdia = [
        full(b"mdhd", 0, &[0u8; 20]),
        full(b"hdlr", 0, &hdlr),
        boxed(b"minf", &boxed(b"stbl", &stbl)),
    ]
    .concat();
    let trak = [full(b"tkhd", 0, &[0u8; 80]), boxed(b"mdia", &mdia)].concat();
    [
        boxed(b"ftyp", b"isom\0\0\0\0isom"),
        boxed(b"moov", &boxed(b"trak", &trak)),
    ]
    .concat()
}
