//! `Range` (blob reads) and `Content-Range` (upload chunks) headers.

/// A byte range request as sent in `Range: bytes=...` (a single range only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` (inclusive) or `bytes=a-` when `last` is `None`.
    From { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

/// A satisfiable range resolved against a blob's size: `[start, start + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub len: u64,
}

impl Span {
    /// The inclusive last byte; only meaningful for a non-empty span.
    pub fn last(&self) -> u64 {
        self.start + self.len - 1
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed range")]
pub struct MalformedRange;

fn number(s: &str) -> Result<u64, MalformedRange> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MalformedRange);
    }
    s.parse().map_err(|_| MalformedRange)
}

impl ByteRange {
    /// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n`. Multiple ranges are refused; a range
    /// whose last byte comes before its first parses, and [`ByteRange::resolve`] finds it
    /// unsatisfiable.
    pub fn parse(header: &str) -> Result<Self, MalformedRange> {
        let spec = header.trim().strip_prefix("bytes=").ok_or(MalformedRange)?;
        let (first, last) = spec.split_once('-').ok_or(MalformedRange)?;
        let (first, last) = (first.trim(), last.trim());
        if first.is_empty() {
            return Ok(ByteRange::Suffix(number(last)?));
        }
        let first = number(first)?;
        let last = if last.is_empty() {
            None
        } else {
            Some(number(last)?)
        };
        Ok(ByteRange::From { first, last })
    }

    /// The span this range selects of a blob of `size` bytes, or `None` if unsatisfiable:
    /// it starts past the end, or it ends before it starts (`bytes=500-0`, which Go's
    /// `http.ServeContent` also refuses with 416 rather than serve the whole blob).
    pub fn resolve(self, size: u64) -> Option<Span> {
        match self {
            ByteRange::From { first, last } => {
                if first >= size || last.is_some_and(|l| l < first) {
                    return None;
                }
                let last = last.map_or(size - 1, |l| l.min(size - 1));
                Some(Span {
                    start: first,
                    len: last - first + 1,
                })
            }
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => {
                if size == 0 {
                    return None;
                }
                let len = n.min(size);
                Some(Span {
                    start: size - len,
                    len,
                })
            }
        }
    }

    pub fn to_header(self) -> String {
        match self {
            ByteRange::From { first, last: None } => format!("bytes={first}-"),
            ByteRange::From {
                first,
                last: Some(l),
            } => format!("bytes={first}-{l}"),
            ByteRange::Suffix(n) => format!("bytes=-{n}"),
        }
    }
}

/// An upload chunk's `Content-Range: <first>-<last>` (inclusive; a `bytes ` prefix is
/// tolerated as some clients send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub first: u64,
    pub last: u64,
}

impl ChunkRange {
    pub fn parse(header: &str) -> Result<Self, MalformedRange> {
        let h = header.trim();
        let h = h.strip_prefix("bytes ").unwrap_or(h);
        let h = h.split_once('/').map_or(h, |(range, _total)| range);
        let (first, last) = h.split_once('-').ok_or(MalformedRange)?;
        let (first, last) = (number(first.trim())?, number(last.trim())?);
        // The byte count must fit a u64: `0-18446744073709551615` is no chunk.
        if last < first || last - first == u64::MAX {
            return Err(MalformedRange);
        }
        Ok(ChunkRange { first, last })
    }

    pub fn byte_count(&self) -> u64 {
        self.last - self.first + 1
    }

    pub fn to_header(self) -> String {
        format!("{}-{}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        let r = ByteRange::parse("bytes=0-9").unwrap();
        assert_eq!(r.resolve(5), Some(Span { start: 0, len: 5 }));
        assert_eq!(ByteRange::parse("bytes=5-").unwrap().resolve(5), None);
        assert_eq!(
            ByteRange::parse("bytes=-2").unwrap().resolve(5),
            Some(Span { start: 3, len: 2 })
        );
        assert_eq!(ByteRange::parse("bytes=3-1").unwrap().resolve(5), None);
        assert_eq!(ByteRange::parse("bytes=500-0").unwrap().resolve(1000), None);
        assert!(ByteRange::parse("bytes=0-1,3-4").is_err());
        assert!(ByteRange::parse("items=0-1").is_err());
    }

    #[test]
    fn chunk_ranges() {
        let c = ChunkRange::parse("10-19").unwrap();
        assert_eq!((c.first, c.byte_count()), (10, 10));
        assert_eq!(ChunkRange::parse("bytes 0-4/5").unwrap().byte_count(), 5);
        assert!(ChunkRange::parse("5-4").is_err());
        assert!(ChunkRange::parse("+1-4").is_err());
        assert!(ChunkRange::parse("0-18446744073709551615").is_err());
        assert_eq!(
            ChunkRange::parse("1-18446744073709551615").map(|c| c.byte_count()),
            Ok(u64::MAX)
        );
    }
}
