//! `Range` and `Content-Range`: parse -> to_header -> parse is the identity, and a resolved
//! span lies inside the blob.

use stowage_core::range::{ByteRange, ChunkRange, Span};

pub fn check(data: &[u8]) {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(range) = ByteRange::parse(header) {
        check_byte_range(range);
    }
    if let Ok(chunk) = ChunkRange::parse(header) {
        check_chunk_range(chunk);
    }
}

fn check_byte_range(range: ByteRange) {
    assert_eq!(ByteRange::parse(&range.to_header()), Ok(range));
    let mentioned = match range {
        ByteRange::From { first, last } => vec![first, last.unwrap_or(first)],
        ByteRange::Suffix(n) => vec![n],
    };
    let sizes = mentioned
        .iter()
        .flat_map(|&n| [n.saturating_sub(1), n, n.saturating_add(1)])
        .chain([0, 1, 2, 1024, u64::MAX]);
    for size in sizes {
        let resolved = range.resolve(size);
        assert_eq!(
            resolved.is_some(),
            satisfiable(range, size),
            "{range:?} against {size} bytes"
        );
        if let Some(span) = resolved {
            check_span(range, span, size);
        }
    }
}

/// RFC 9110 14.1.1: a range is satisfiable when it starts inside the representation (and, as
/// Go's `http.ServeContent` has it, ends no earlier than it starts), a
/// suffix when it asks for at least one byte of a non-empty one.
fn satisfiable(range: ByteRange, size: u64) -> bool {
    match range {
        ByteRange::From { first, last } => first < size && last.is_none_or(|l| l >= first),
        ByteRange::Suffix(n) => n > 0 && size > 0,
    }
}

fn check_span(range: ByteRange, span: Span, size: u64) {
    assert!(span.len > 0, "{range:?} resolved to an empty span");
    let end = span
        .start
        .checked_add(span.len)
        .expect("span end overflows");
    assert!(
        end <= size,
        "{range:?} resolved past {size} bytes: {span:?}"
    );
    match range {
        ByteRange::From { first, last } => {
            assert_eq!(span.start, first);
            assert_eq!(span.last(), last.unwrap_or(u64::MAX).min(size - 1));
        }
        ByteRange::Suffix(n) => {
            assert_eq!(span.len, n.min(size));
            assert_eq!(end, size);
        }
    }
    // The Content-Range a 206 answers with describes the same span.
    let content_range = format!("bytes {}-{}/{size}", span.start, span.last());
    let echoed = ChunkRange::parse(&content_range).expect("our Content-Range parses");
    assert_eq!((echoed.first, echoed.byte_count()), (span.start, span.len));
}

fn check_chunk_range(chunk: ChunkRange) {
    assert!(chunk.first <= chunk.last);
    assert_eq!(ChunkRange::parse(&chunk.to_header()), Ok(chunk));
    let count = chunk.byte_count();
    assert_eq!(chunk.last.checked_sub(chunk.first), count.checked_sub(1));
}
