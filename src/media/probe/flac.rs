//! FLAC: the `STREAMINFO` block that must follow the `fLaC` marker gives the sample rate and
//! the total number of samples; duration = samples ÷ rate (none when the encoder did not
//! know the total, which `STREAMINFO` writes as 0).

use super::MediaFacts;
use super::bits::{be64, ratio};
use super::reader::Reader;

/// Parses a FLAC stream whose `fLaC` marker is at `at` (0, or past an ID3v2 tag).
pub(super) async fn probe(r: &mut Reader<'_>, f: &mut MediaFacts, at: u64) -> Option<()> {
    let b = r.get(at, 4 + 4 + 34, 4096).await?;
    let (rate, samples) = stream_info(&b)?;
    f.codec = Some("flac".to_owned());
    f.container = Some("flac".to_owned());
    f.duration = ratio(samples as f64, f64::from(rate));
    Some(())
}

/// `(sample rate, total samples)` from the bytes `fLaC` + the STREAMINFO block.
pub(super) fn stream_info(b: &[u8]) -> Option<(u32, u64)> {
    if b.get(..4)? != b"fLaC" || b.get(4)? & 0x7F != 0 {
        return None;
    }
    // The 64 bits after min/max block size (4 bytes) and min/max frame size (6 bytes):
    // 20 bits of rate, 3 of channels, 5 of sample size, 36 of total samples.
    let v = be64(b, 8 + 10)?;
    Some(((v >> 44) as u32, v & 0xF_FFFF_FFFF))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaminfo() {
        let mut b = b"fLaC\x80\0\0\x22".to_vec();
        b.extend_from_slice(&[0x10, 0, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        // 44100 Hz, 2 channels, 16 bits, 88200 samples.
        let v: u64 = (44_100 << 44) | (1 << 41) | (15 << 36) | 88_200;
        b.extend_from_slice(&v.to_be_bytes());
        b.extend_from_slice(&[0; 16]);
        assert_eq!(stream_info(&b), Some((44_100, 88_200)));
        assert_eq!(stream_info(&b[..20]), None);
        b[4] = 0x81; // not STREAMINFO first
        assert_eq!(stream_info(&b), None);
    }
}
