//! Cuts a text file (CSV, NDJSON) into blocks of whole records, so each block can be
//! decoded by a different worker. Quote-aware: a newline inside a quoted CSV field does not
//! end a record. Blocks also carry their first line number, for error messages.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Result, SluiceError};

pub(crate) struct Block {
    pub bytes: Vec<u8>,
    /// 1-based line number (in the file) of the block's first line.
    pub first_line: u64,
    /// Byte offset (in the file) of the block's first byte.
    pub offset: u64,
}

pub(crate) struct BlockReader {
    path: PathBuf,
    file: File,
    quote: Option<u8>,
    /// Bytes read but not yet handed out (a partial record).
    carry: Vec<u8>,
    next_line: u64,
    /// File offset of the first byte of `carry`.
    next_offset: u64,
    eof: bool,
}

impl BlockReader {
    /// Starts reading `file` after a prefix already consumed (e.g. a header) that ends at
    /// byte `first_offset`, before line `first_line`; `carry` holds the bytes read past it.
    pub fn new(
        path: &Path,
        file: File,
        quote: Option<u8>,
        carry: Vec<u8>,
        first_line: u64,
        first_offset: u64,
    ) -> Self {
        BlockReader {
            path: path.to_path_buf(),
            file,
            quote,
            carry,
            next_line: first_line,
            next_offset: first_offset,
            eof: false,
        }
    }

    /// The next block of about `target` bytes ending at a record boundary, or `None`.
    pub fn next_block(&mut self, target: usize) -> Result<Option<Block>> {
        let target = target.max(4096);
        let mut buf = std::mem::take(&mut self.carry);
        loop {
            if !self.eof && buf.len() < target {
                let want = target - buf.len();
                let read = self.fill(&mut buf, want)?;
                if read == 0 {
                    self.eof = true;
                }
                continue;
            }
            if buf.is_empty() {
                return Ok(None);
            }
            let cut = if self.eof {
                Some(buf.len())
            } else {
                last_record_end(&buf, self.quote)
            };
            match cut {
                Some(cut) => {
                    self.carry = buf.split_off(cut);
                    let first_line = self.next_line;
                    let offset = self.next_offset;
                    self.next_line += memchr::memchr_iter(b'\n', &buf).count() as u64;
                    self.next_offset += buf.len() as u64;
                    if buf.iter().all(|b| b.is_ascii_whitespace()) {
                        // Trailing blank lines: nothing to decode.
                        if self.eof && self.carry.is_empty() {
                            return Ok(None);
                        }
                        buf = std::mem::take(&mut self.carry);
                        continue;
                    }
                    return Ok(Some(Block {
                        bytes: buf,
                        first_line,
                        offset,
                    }));
                }
                None => {
                    // One record longer than the block: read on until it ends.
                    let read = self.fill(&mut buf, target)?;
                    if read == 0 {
                        self.eof = true;
                    }
                }
            }
        }
    }

    fn fill(&mut self, buf: &mut Vec<u8>, want: usize) -> Result<usize> {
        // `read_to_end` reads into the spare capacity without zero-filling it first (a
        // `resize` to the block size was a fifth of a CSV run's time).
        // It also retries reads that were interrupted.
        buf.reserve(want);
        (&mut self.file)
            .take(want as u64)
            .read_to_end(buf)
            .map_err(|source| SluiceError::Read {
                path: self.path.clone(),
                source,
            })
    }
}

/// Index just past the last newline of `buf` that is outside quotes, if any.
pub(crate) fn last_record_end(buf: &[u8], quote: Option<u8>) -> Option<usize> {
    match quote {
        Some(q) if memchr::memchr(q, buf).is_some() => {
            let mut in_quotes = false;
            let mut last = None;
            for i in memchr::memchr2_iter(q, b'\n', buf) {
                if buf[i] == q {
                    in_quotes = !in_quotes;
                } else if !in_quotes {
                    last = Some(i + 1);
                }
            }
            last
        }
        _ => memchr::memrchr(b'\n', buf).map(|i| i + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_newlines_do_not_end_records() {
        let buf = b"a,\"x\ny\"\nb,\"z\n";
        assert_eq!(last_record_end(buf, Some(b'"')), Some(8));
        assert_eq!(last_record_end(buf, None), Some(13));
    }
}
