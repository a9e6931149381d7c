//! ISO base media files (MP4, MOV, M4V, M4A, 3GP): the top-level boxes are walked by their
//! 16-byte headers to find `moov` wherever it is (MP4s written without "fast start" keep it
//! at the end), `moov` is read in one range and its children are decoded by [`mp4_atom`].
//! Each `trak` is decoded on its own, so a track the crate cannot read (an exotic sample
//! entry) costs only that track.

use mp4_atom::{Codec, Decode, FourCC, Moof, Mvex, Mvhd, StszSamples, Trak, TrunSamples};

use super::bits::{be32, be64, ratio};
use super::reader::Reader;
use super::{MAX_PROBE_READ, MediaFacts, set_kind};

/// The most top-level boxes walked.
const MAX_BOXES: u32 = 1024;

/// The largest `moof` read when a fragmented file's duration has to be added up.
const MAX_MOOF: u64 = 1 << 20;

pub(super) async fn probe(r: &mut Reader<'_>, f: &mut MediaFacts) -> Option<()> {
    let size = r.size();
    let mut at = 0u64;
    let mut brand = None;
    let mut movie: Option<Movie> = None;
    let mut fragments = Fragments::default();
    let mut walked_to_end = false;
    for _ in 0..MAX_BOXES {
        if at.checked_add(8)? > size {
            walked_to_end = true;
            break;
        }
        let Some(h) = r.get(at, 16, 16).await else {
            break;
        };
        let Some((kind, len, header)) = box_header(&h, size - at) else {
            break;
        };
        match &kind {
            b"ftyp" if brand.is_none() => brand = h.get(8..12).map(|b| [b[0], b[1], b[2], b[3]]),
            b"moov" if movie.is_none() => {
                if len > MAX_PROBE_READ {
                    return None;
                }
                let moov = r.get(at, len, 0).await?;
                r.work(moov.len() as u64)?;
                movie = Some(Movie::decode(moov.get(header as usize..)?));
            }
            b"moof" => match &movie {
                Some(m) if m.needs_fragments() && len <= MAX_MOOF => {
                    let Some(moof) = r
                        .get(at, len, 0)
                        .await
                        .filter(|m| r.work(m.len() as u64).is_some())
                    else {
                        fragments.incomplete = true;
                        break;
                    };
                    fragments.add(&moof, m);
                }
                Some(m) if m.needs_fragments() => fragments.incomplete = true,
                _ => {}
            },
            _ => {}
        }
        if movie.as_ref().is_some_and(|m| !m.needs_fragments()) {
            break;
        }
        at = at.checked_add(len)?;
    }
    if !walked_to_end && movie.as_ref().is_some_and(Movie::needs_fragments) {
        // The walk stopped early (box cap, a broken box): the fragments' sum would be short.
        fragments.incomplete = true;
    }
    let movie = movie?;
    movie.fill(f, &fragments);
    f.container = Some(container(brand).to_owned());
    Some(())
}

/// `(type, size, header length)` of the box whose header starts `h`, with `left` bytes from
/// there to the end of the file. `None` for a box that cannot be (smaller than its header).
fn box_header(h: &[u8], left: u64) -> Option<([u8; 4], u64, u64)> {
    let size32 = be32(h, 0)?;
    let kind: [u8; 4] = h.get(4..8)?.try_into().ok()?;
    let (len, header) = match size32 {
        0 => (left, 8),
        1 => (be64(h, 8)?, 16),
        n => (u64::from(n), 8),
    };
    (len >= header).then_some((kind, len.min(left.max(header)), header))
}

/// A copy of `boxes` in which every sample-group description box (`sgpd`) is turned into a
/// `free` box, which `mp4_atom` skips. The facts never need sample groups, and `mp4_atom`
/// 0.17 decodes an `sgpd` entry count of up to 2³² entries that may take no byte each: 854
/// bytes made it allocate gigabytes (found by the `probe_media` and `probe_mp4` fuzz targets;
/// `fuzz/corpus/probe_{media,mp4}/regression-sgpd-*`). `mp4_atom` decodes child boxes of any
/// type wherever it decodes children at all (an `sgpd` inside `stsd` or a sample entry
/// counts too), so every `sgpd` type code is replaced, not only those where a well-formed
/// file keeps them; a coincidental `sgpd` inside other data can only cost a fact.
fn defused(boxes: &[u8]) -> Vec<u8> {
    let mut out = boxes.to_vec();
    let mut at = 0;
    while let Some(i) = out[at..].windows(4).position(|w| w == b"sgpd") {
        out[at + i..at + i + 4].copy_from_slice(b"free");
        at += i + 4;
    }
    out
}

/// A short container name from the `ftyp` major brand.
fn container(brand: Option<[u8; 4]>) -> &'static str {
    match brand.as_ref().map(|b| &b[..]) {
        None | Some(b"qt  ") => "mov",
        Some(b"M4A " | b"M4B " | b"M4P ") => "m4a",
        Some(b"M4V " | b"M4VH" | b"M4VP") => "m4v",
        Some(b) if b.starts_with(b"3gp") || b.starts_with(b"3ge") || b.starts_with(b"3gg") => "3gp",
        Some(b) if b.starts_with(b"3g2") => "3g2",
        Some(_) => "mp4",
    }
}

/// What `moov` says.
#[derive(Default)]
struct Movie {
    timescale: u32,
    duration: u64,
    /// `mvex`: fragmented; `Some(mehd duration)` when stated.
    fragmented: Option<Option<u64>>,
    /// `(track id, default sample duration)` from `trex`.
    trex: Vec<(u32, u32)>,
    video: Option<Track>,
    audio: Option<Track>,
}

struct Track {
    id: u32,
    codec: Option<&'static str>,
    width: u16,
    height: u16,
    timescale: u32,
    duration: u64,
    samples: u64,
    /// The sample delta that covers the most samples.
    delta: u32,
}

impl Movie {
    fn decode(mut body: &[u8]) -> Movie {
        let mut m = Movie::default();
        while let Some((kind, len, _)) = box_header(body, body.len() as u64) {
            let Ok(len) = usize::try_from(len) else { break };
            let Some((child, rest)) = body.split_at_checked(len) else {
                break;
            };
            body = rest;
            match &kind {
                b"mvhd" => {
                    if let Ok(h) = Mvhd::decode(&mut &child[..]) {
                        m.timescale = h.timescale;
                        m.duration = h.duration;
                    }
                }
                b"mvex" => {
                    // `mp4_atom` decodes any child box here too: an `sgpd` as well.
                    let mvex = Mvex::decode(&mut &defused(child)[..]).ok();
                    m.fragmented = Some(
                        mvex.as_ref()
                            .and_then(|x| x.mehd.as_ref())
                            .map(|h| h.fragment_duration),
                    );
                    for t in mvex.iter().flat_map(|x| &x.trex) {
                        m.trex.push((t.track_id, t.default_sample_duration));
                    }
                }
                b"trak" => {
                    let child = defused(child);
                    let Ok(trak) = Trak::decode(&mut &child[..]) else {
                        continue;
                    };
                    let handler = trak.mdia.hdlr.handler;
                    let slot = if handler == FourCC::new(b"vide") {
                        &mut m.video
                    } else if handler == FourCC::new(b"soun") {
                        &mut m.audio
                    } else {
                        continue;
                    };
                    if slot.is_none() {
                        *slot = Some(Track::new(&trak));
                    }
                }
                _ => {}
            }
        }
        m
    }

    /// A fragmented file whose duration `moov` does not give: the `moof`s have to be read.
    fn needs_fragments(&self) -> bool {
        matches!(self.fragmented, Some(None)) && self.duration == 0
    }

    fn fill(&self, f: &mut MediaFacts, frags: &Fragments) {
        let main = self.video.as_ref().or(self.audio.as_ref());
        set_kind(
            f,
            self.video.is_some(),
            self.audio.is_some(),
            match f.mime_type.as_str() {
                "video/mp4" | "video/x-m4v" => Some("audio/mp4"),
                _ => None,
            },
            match f.mime_type.as_str() {
                "audio/m4a" => Some("video/mp4"),
                _ => None,
            },
        );
        let fragment_time = |t: &Track| -> Option<f64> {
            let d = frags.duration.iter().find(|(id, _)| *id == t.id)?.1;
            ratio(d as f64, f64::from(t.timescale))
        };
        f.duration = ratio(self.duration as f64, f64::from(self.timescale))
            .or_else(|| match self.fragmented {
                Some(Some(d)) => ratio(d as f64, f64::from(self.timescale)),
                _ => None,
            })
            .or_else(|| {
                if frags.incomplete {
                    return None;
                }
                let times = [self.video.as_ref(), self.audio.as_ref()];
                times
                    .into_iter()
                    .flatten()
                    .filter_map(fragment_time)
                    .reduce(f64::max)
            })
            .or_else(|| {
                let times = [self.video.as_ref(), self.audio.as_ref()];
                times
                    .into_iter()
                    .flatten()
                    .filter_map(|t| ratio(t.duration as f64, f64::from(t.timescale)))
                    .reduce(f64::max)
            });
        f.codec = main.and_then(|t| t.codec).map(str::to_owned);
        if let Some(v) = &self.video {
            f.width = Some(u32::from(v.width));
            f.height = Some(u32::from(v.height));
            f.fps = ratio(f64::from(v.timescale), f64::from(v.delta));
            let fragment_frames = frags
                .samples
                .iter()
                .find(|(id, _)| *id == v.id)
                .map(|x| x.1);
            f.frames = match (v.samples, fragment_frames) {
                (0, Some(n)) if !frags.incomplete => Some(n),
                (0, _) => None,
                (n, _) => Some(n),
            };
            if f.fps.is_none() && !frags.incomplete {
                let d = frags
                    .duration
                    .iter()
                    .find(|(id, _)| *id == v.id)
                    .map(|x| x.1);
                f.fps = f
                    .frames
                    .zip(d)
                    .and_then(|(n, d)| ratio(n as f64 * f64::from(v.timescale), d as f64));
            }
        }
    }
}

impl Track {
    fn new(trak: &Trak) -> Track {
        let stbl = &trak.mdia.minf.stbl;
        let entry = stbl.stsd.codecs.first();
        let visual = entry.and_then(Codec::visual);
        let samples = match &stbl.stsz.samples {
            StszSamples::Identical { count, .. } => u64::from(*count),
            StszSamples::Different { sizes } => sizes.len() as u64,
        };
        let stts_samples: u64 = stbl
            .stts
            .entries
            .iter()
            .map(|e| u64::from(e.sample_count))
            .sum();
        let delta = stbl
            .stts
            .entries
            .iter()
            .filter(|e| e.sample_delta > 0)
            .max_by_key(|e| e.sample_count)
            .map_or(0, |e| e.sample_delta);
        let (tw, th) = (trak.tkhd.width.integer(), trak.tkhd.height.integer());
        Track {
            id: trak.tkhd.track_id,
            codec: entry.and_then(codec_name),
            width: visual.map(|v| v.width).filter(|w| *w > 0).unwrap_or(tw),
            height: visual.map(|v| v.height).filter(|h| *h > 0).unwrap_or(th),
            timescale: trak.mdia.mdhd.timescale,
            duration: trak.mdia.mdhd.duration,
            samples: if samples > 0 { samples } else { stts_samples },
            delta,
        }
    }
}

/// What the `moof` boxes of a fragmented file add up to, per track id.
#[derive(Default)]
struct Fragments {
    duration: Vec<(u32, u64)>,
    samples: Vec<(u32, u64)>,
    /// Some fragment could not be read: the sums are short.
    incomplete: bool,
}

impl Fragments {
    fn add(&mut self, moof: &[u8], m: &Movie) {
        let moof = defused(moof);
        let Ok(moof) = Moof::decode(&mut &moof[..]) else {
            self.incomplete = true;
            return;
        };
        for traf in &moof.traf {
            let id = traf.tfhd.track_id;
            let default = traf
                .tfhd
                .default_sample_duration
                .or_else(|| m.trex.iter().find(|t| t.0 == id).map(|t| t.1))
                .unwrap_or(0);
            let (mut d, mut n) = (0u64, 0u64);
            for trun in &traf.trun {
                let (rd, rn) = run_sums(&trun.samples, default);
                d = d.saturating_add(rd);
                n = n.saturating_add(rn);
            }
            add_to(&mut self.duration, id, d);
            add_to(&mut self.samples, id, n);
        }
    }
}

/// `(duration, samples)` of one `trun`, in work bounded by its bytes: a run without
/// per-sample fields carries no byte per sample, whatever its `sample_count` says (up to
/// 2³² − 1 in a 20-byte box), so its sums are computed, not counted out sample by sample
/// (which took ~1.8 s for one such box); an explicit run's entries each took ≥ 4 bytes of
/// the box to decode.
fn run_sums(samples: &TrunSamples, default: u32) -> (u64, u64) {
    match samples {
        TrunSamples::Inherited { count, .. } => {
            let n = u64::from(*count);
            (n.saturating_mul(u64::from(default)), n)
        }
        TrunSamples::Explicit(entries) => {
            let d = entries.iter().fold(0u64, |d, s| {
                d.saturating_add(u64::from(s.duration.unwrap_or(default)))
            });
            (d, entries.len() as u64)
        }
    }
}

fn add_to(sums: &mut Vec<(u32, u64)>, id: u32, n: u64) {
    match sums.iter_mut().find(|(i, _)| *i == id) {
        Some((_, s)) => *s = s.saturating_add(n),
        None => sums.push((id, n)),
    }
}

/// ffprobe's `codec_name` for a sample entry.
fn codec_name(c: &Codec) -> Option<&'static str> {
    Some(match c {
        Codec::Avc1(_) | Codec::Avc3(_) => "h264",
        Codec::Hev1(_) | Codec::Hvc1(_) => "hevc",
        Codec::Vp08(_) => "vp8",
        Codec::Vp09(_) => "vp9",
        Codec::Av01(_) => "av1",
        Codec::Jpeg(_) => "mjpeg",
        Codec::Mp4a(a) => match a.esds.es_desc.dec_config.object_type_indication {
            0x69 | 0x6B => "mp3",
            0x20 => "mpeg4",
            0x21 => "h264",
            0x60..=0x65 => "mpeg2video",
            0x6A => "mpeg1video",
            0x6C => "mjpeg",
            0xA5 => "ac3",
            0xA6 => "eac3",
            0xA9 | 0xAC => "dts",
            0xAD => "opus",
            0xDD => "vorbis",
            _ => "aac",
        },
        Codec::Mp3(_) => "mp3",
        Codec::Opus(_) => "opus",
        Codec::Flac(_) => "flac",
        Codec::Ac3(_) => "ac3",
        Codec::Eac3(_) => "eac3",
        Codec::Sowt(_) | Codec::S16l(_) => "pcm_s16le",
        Codec::Twos(_) => "pcm_s16be",
        Codec::In24(_) => "pcm_s24be",
        Codec::In32(_) => "pcm_s32be",
        Codec::Fl32(_) => "pcm_f32be",
        Codec::Fl64(_) => "pcm_f64be",
        Codec::Tx3g(_) => "mov_text",
        Codec::Wvtt(_) => "webvtt",
        Codec::Samr(_) => "amr_nb",
        Codec::Unknown(fourcc, _) => match fourcc.as_ref() {
            b"mp4v" => "mpeg4",
            b"s263" | b"h263" => "h263",
            b"dvh1" | b"dvhe" => "hevc",
            b"dva1" | b"dvav" => "h264",
            b"dav1" => "av1",
            b"apch" | b"apcn" | b"apcs" | b"apco" | b"ap4h" | b"ap4x" => "prores",
            b"mjpa" | b"mjpb" | b"AVDJ" => "mjpeg",
            b"alac" => "alac",
            b"ulaw" => "pcm_mulaw",
            b"alaw" => "pcm_alaw",
            b"raw " => "rawvideo",
            b"sawb" => "amr_wb",
            b"ac-4" => "ac4",
            b"mha1" | b"mhm1" => "mpegh_3d_audio",
            b"c608" => "eia_608",
            _ => return None,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wraps `body` in a box of type `kind`.
    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = (8 + body.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    /// Regression (fuzz `probe_media`, timeout/OOM): an `sgpd` of version 0 with an unknown
    /// grouping type and a huge entry count made `mp4_atom` push entries that consume no
    /// byte, forever. Defused, the box is skipped: the track decodes at once, with no sample
    /// group, whatever the count says.
    #[test]
    fn sample_group_descriptions_are_defused() {
        // version 0, flags 0, grouping type `zzzz`, entry count 50 000 000.
        let mut sgpd = vec![0, 0, 0, 0];
        sgpd.extend_from_slice(b"zzzz");
        sgpd.extend_from_slice(&50_000_000u32.to_be_bytes());
        let stbl = boxed(b"stbl", &boxed(b"sgpd", &sgpd));
        let trak = boxed(b"trak", &boxed(b"mdia", &boxed(b"minf", &stbl)));
        let fixed = defused(&trak);
        assert_eq!(fixed.len(), trak.len());
        assert!(!fixed.windows(4).any(|w| w == b"sgpd"), "{fixed:?}");
        assert_eq!(fixed.windows(4).filter(|w| *w == b"free").count(), 1);
        // Everything else is untouched.
        let diff: Vec<usize> = (0..trak.len()).filter(|&i| trak[i] != fixed[i]).collect();
        assert!(diff.len() <= 4, "{diff:?}");
        // A track that lacks the required boxes fails to decode, quickly, instead of
        // allocating for fifty million entries.
        let t0 = std::time::Instant::now();
        assert!(Trak::decode(&mut &fixed[..]).is_err());
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
        // The whole probe of a file with it ends too.
        let mut file = boxed(b"ftyp", b"isom\0\0\0\0isom");
        file.extend_from_slice(&boxed(b"moov", &trak));
        let facts = futures_util::FutureExt::now_or_never(crate::media::probe(
            &crate::media::MemorySource::new(bytes::Bytes::from(file)),
            None,
            "a.mp4",
        ))
        .expect("a memory probe never waits");
        assert_eq!(facts.mime_type, "video/mp4");
    }

    /// A full box: version 0, flags `flags`, then `body`.
    fn full(kind: &[u8; 4], flags: u32, body: &[u8]) -> Vec<u8> {
        boxed(kind, &[&flags.to_be_bytes()[..], body].concat())
    }

    /// The file of the security finding (~250 bytes): `ftyp`; a `moov` with an `mvhd` of
    /// duration 0 and `mvex`/`trex` (so the fragments are summed); a `moof` whose `traf`
    /// holds `runs` `trun` boxes of version 0, flags 0 and `sample_count` 2³² − 1.
    pub(crate) fn endless_runs(runs: usize) -> Vec<u8> {
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

    /// Security finding 1: a `trun` without per-sample fields claims 2³² − 1 samples in 16
    /// bytes; they were counted out one by one (~1.8 s of CPU per box). Its sums are now
    /// computed: the same facts, at once.
    #[test]
    fn runs_without_sample_fields_are_summed_not_counted() {
        let file = endless_runs(4);
        assert!(file.len() < 300, "{}", file.len());
        let t0 = std::time::Instant::now();
        let facts = futures_util::FutureExt::now_or_never(crate::media::probe(
            &crate::media::MemorySource::new(file),
            None,
            "a.mp4",
        ))
        .expect("a memory probe never waits");
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(facts.mime_type, "video/mp4");
        let inherited = TrunSamples::Inherited {
            count: u32::MAX,
            first_flags: None,
        };
        let n = u64::from(u32::MAX);
        assert_eq!(run_sums(&inherited, 1000), (n * 1000, n));
        assert_eq!(run_sums(&inherited, 0), (0, n));
        let explicit = TrunSamples::Explicit(vec![
            mp4_atom::TrunEntry {
                duration: Some(5),
                ..Default::default()
            },
            mp4_atom::TrunEntry::default(),
        ]);
        assert_eq!(run_sums(&explicit, 7), (12, 2));
    }

    /// Regression (fuzz `probe_mp4` with the trun-finding seed, OOM: malloc of 2.6 GB): an
    /// `sgpd` inside `mvex`, which was handed to `mp4_atom` without being defused.
    #[test]
    fn sample_group_descriptions_in_mvex_are_defused() {
        let mut sgpd = vec![0, 0, 0, 0];
        sgpd.extend_from_slice(b"zzzz");
        sgpd.extend_from_slice(&50_000_000u32.to_be_bytes());
        let mut mvhd = vec![0u8; 96];
        mvhd[8..12].copy_from_slice(&1000u32.to_be_bytes());
        let moov = [
            full(b"mvhd", 0, &mvhd),
            boxed(b"mvex", &boxed(b"sgpd", &sgpd)),
        ]
        .concat();
        let file = [boxed(b"ftyp", b"isom\0\0\0\0isom"), boxed(b"moov", &moov)].concat();
        let t0 = std::time::Instant::now();
        let facts = futures_util::FutureExt::now_or_never(crate::media::probe(
            &crate::media::MemorySource::new(file),
            None,
            "a.mp4",
        ))
        .expect("a memory probe never waits");
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(facts.mime_type, "video/mp4");
    }

    #[test]
    fn every_sgpd_is_defused_wherever_it_sits() {
        assert_eq!(defused(b""), b"");
        assert_eq!(defused(b"sgp"), b"sgp");
        assert_eq!(defused(b"sgpdsgpd"), b"freefree");
        // Inside `stsd` (not a plain container: the fuzzer put it there).
        let stsd = boxed(
            b"stsd",
            &[&[0u8; 8][..], &boxed(b"sgpd", &[0; 12])].concat(),
        );
        assert!(!defused(&stsd).windows(4).any(|w| w == b"sgpd"));
        assert_eq!(defused(&stsd).len(), stsd.len());
    }

    #[test]
    fn box_headers() {
        assert_eq!(box_header(b"\0\0\0\x10moov", 100), Some((*b"moov", 16, 8)));
        assert_eq!(box_header(b"\0\0\0\0mdat", 100), Some((*b"mdat", 100, 8)));
        let large = b"\0\0\0\x01mdat\0\0\0\x01\0\0\0\0";
        assert_eq!(box_header(large, 1 << 40), Some((*b"mdat", 1 << 32, 16)));
        assert_eq!(box_header(b"\0\0\0\x04free", 100), None);
        // Past the end of the file: cut there.
        assert_eq!(box_header(b"\0\0\x10\0moov", 100), Some((*b"moov", 100, 8)));
        assert_eq!(box_header(b"\0\0\0", 100), None);
    }

    #[test]
    fn containers() {
        assert_eq!(container(Some(*b"qt  ")), "mov");
        assert_eq!(container(Some(*b"isom")), "mp4");
        assert_eq!(container(Some(*b"M4A ")), "m4a");
        assert_eq!(container(Some(*b"3gp5")), "3gp");
        assert_eq!(container(None), "mov");
    }
}
