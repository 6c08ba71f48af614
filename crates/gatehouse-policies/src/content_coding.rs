//! Decoding a body the upstream sent with a `Content-Encoding`, for the policies that
//! edit bodies: gzip, deflate, br and zstd, bounded so a small bomb cannot become a
//! large body.

use std::borrow::Cow;
use std::io::Read;

/// Why a body could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Decoded, it is larger than the limit.
    TooLarge,
    /// The coding is not one of those known.
    Unknown,
    /// The bytes are not valid for the coding.
    Corrupt,
}

/// Whether `coding` (a `Content-Encoding` value) is one [`decode`] undoes; `identity`
/// and none are.
pub fn decodable(coding: Option<&str>) -> bool {
    match coding.map(|c| c.trim().to_ascii_lowercase()) {
        None => true,
        Some(c) => matches!(
            c.as_str(),
            "" | "identity" | "gzip" | "x-gzip" | "deflate" | "br" | "zstd"
        ),
    }
}

/// `body` decoded from `coding`, at most `max` bytes (borrowed when it was not encoded).
pub fn decode<'b>(coding: &str, body: &'b [u8], max: u64) -> Result<Cow<'b, [u8]>, DecodeError> {
    let reader: Box<dyn Read + '_> = match coding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => return bounded(body, max),
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(body)),
        // HTTP's deflate is the zlib format (RFC 9110 section 8.4.1.2).
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(body)),
        "br" => Box::new(brotli::Decompressor::new(body, 4096)),
        "zstd" => {
            Box::new(zstd::stream::read::Decoder::new(body).map_err(|_| DecodeError::Corrupt)?)
        }
        _ => return Err(DecodeError::Unknown),
    };
    let mut out = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Corrupt)?;
    if out.len() as u64 > max {
        return Err(DecodeError::TooLarge);
    }
    Ok(Cow::Owned(out))
}

fn bounded(body: &[u8], max: u64) -> Result<Cow<'_, [u8]>, DecodeError> {
    if body.len() as u64 > max {
        return Err(DecodeError::TooLarge);
    }
    Ok(Cow::Borrowed(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn each_coding_decodes_within_the_bound() {
        let plain = b"{\"a\":1}".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zl.write_all(&plain).unwrap();
        let zl = zl.finish().unwrap();
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 4, 22)
            .write_all(&plain)
            .unwrap();
        let zs = zstd::encode_all(&plain[..], 3).unwrap();
        for (coding, body) in [("gzip", &gz), ("deflate", &zl), ("br", &br), ("zstd", &zs)] {
            assert_eq!(decode(coding, body, 10_000).unwrap(), plain, "{coding}");
            assert_eq!(
                decode(coding, body, 699),
                Err(DecodeError::TooLarge),
                "{coding}"
            );
        }
        assert_eq!(decode("gzip", b"not gzip", 100), Err(DecodeError::Corrupt));
        assert_eq!(decode("compress", b"x", 100), Err(DecodeError::Unknown));
        assert!(decodable(None) && decodable(Some("GZIP")) && !decodable(Some("compress")));
    }
}
