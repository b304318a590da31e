//! Row-level rejects for text blocks (CSV, NDJSON). A block is decoded whole (the fast
//! path); only when that fails is it split into records and decoded by halves, down to
//! the single records that fail, which are set aside as [`Reject`]s while every good record
//! around them is kept, in order. Good input costs nothing extra.

use std::ops::Range;
use std::path::Path;

use arrow::record_batch::RecordBatch;

use super::blocks::Block;
use super::{DecodedPart, Reject};

/// Byte ranges of the records of `bytes` (each with its line ending), cut at newlines
/// outside quotes. A quoted field may hold newlines; an unclosed quote runs to the end.
pub(crate) fn split_records(bytes: &[u8], quote: Option<u8>) -> Vec<Range<usize>> {
    let mut records = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let ends: Box<dyn Iterator<Item = usize>> = match quote {
        Some(q) => Box::new(memchr::memchr2_iter(q, b'\n', bytes)),
        None => Box::new(memchr::memchr_iter(b'\n', bytes)),
    };
    for i in ends {
        if Some(bytes[i]) == quote {
            in_quotes = !in_quotes;
        } else if !in_quotes {
            records.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < bytes.len() {
        records.push(start..bytes.len());
    }
    records
}

/// Decodes `block`: whole first, and by halves if that fails. `decode(bytes, records)`
/// decodes whole records (about `records` of them); `cause(line, error)` says why a
/// record that fails alone failed. Rejects leave the rest of the block intact; their
/// `position` counts the good rows of the block before them.
pub(crate) fn decode_block<E>(
    path: &Path,
    block: &Block,
    quote: Option<u8>,
    decode: impl Fn(&[u8], usize) -> Result<Vec<RecordBatch>, E>,
    cause: impl Fn(u64, E) -> String,
) -> DecodedPart {
    // The fast path: good input is decoded once, never split.
    if let Ok(batches) = decode(&block.bytes, usize::MAX) {
        return batches.into();
    }
    let records = split_records(&block.bytes, quote);
    let mut finder = Finder {
        path,
        block,
        records: &records,
        decode: &decode,
        cause: &cause,
        part: DecodedPart::default(),
        rows: 0,
        lines: LineCounter::default(),
    };
    finder.split(0..records.len());
    finder.part
}

struct Finder<'a, D, C> {
    path: &'a Path,
    block: &'a Block,
    records: &'a [Range<usize>],
    decode: &'a D,
    cause: &'a C,
    part: DecodedPart,
    /// Good rows found so far.
    rows: u64,
    lines: LineCounter,
}

impl<E, D, C> Finder<'_, D, C>
where
    D: Fn(&[u8], usize) -> Result<Vec<RecordBatch>, E>,
    C: Fn(u64, E) -> String,
{
    /// `span` (records) failed as a whole: decode its halves, in order.
    fn split(&mut self, span: Range<usize>) {
        let mid = span.start + (span.end - span.start) / 2;
        for half in [span.start..mid, mid..span.end] {
            if !half.is_empty() {
                self.try_span(half);
            }
        }
    }

    fn try_span(&mut self, span: Range<usize>) {
        let bytes = self.records[span.start].start..self.records[span.end - 1].end;
        match (self.decode)(&self.block.bytes[bytes.clone()], span.len()) {
            Ok(batches) => {
                self.rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                self.part.batches.extend(batches);
            }
            Err(_) if span.len() > 1 => self.split(span),
            Err(error) => {
                let line = self.block.first_line
                    + self.lines.newlines_before(&self.block.bytes, bytes.start);
                let mut reject = Reject::new(
                    self.path.to_path_buf(),
                    line,
                    self.block.offset + bytes.start as u64,
                    &self.block.bytes[bytes],
                    (self.cause)(line, error),
                );
                reject.position = self.rows;
                self.part.rejects.push(reject);
            }
        }
    }
}

/// Counts newlines before a byte index, moving forward only (rejects come in order).
#[derive(Default)]
struct LineCounter {
    at: usize,
    newlines: u64,
}

impl LineCounter {
    fn newlines_before(&mut self, bytes: &[u8], index: usize) -> u64 {
        self.newlines += memchr::memchr_iter(b'\n', &bytes[self.at..index]).count() as u64;
        self.at = index;
        self.newlines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_end_at_unquoted_newlines() {
        let bytes = b"a,\"x\ny\"\nb\n\"c\"\"\n\",1\nlast";
        let records: Vec<&[u8]> = split_records(bytes, Some(b'"'))
            .into_iter()
            .map(|r| &bytes[r])
            .collect();
        assert_eq!(
            records,
            vec![
                &b"a,\"x\ny\"\n"[..],
                &b"b\n"[..],
                &b"\"c\"\"\n\",1\n"[..],
                &b"last"[..]
            ]
        );
        assert_eq!(split_records(b"a\"\nb\n", None).len(), 2);
    }
}
