//! Exactly once across crashes. Before the source hands rows to the engine, it appends to
//! `_stream_ledger.jsonl` which message each row is (`{"row": first, "ids": [...]}`), and
//! flushes. A message is acknowledged only once the part holding its row is committed (the
//! manifest lists parts by input rows). On restart, the manifest says which rows are
//! committed: the ledger turns them back into message ids, which are acknowledged then and
//! dropped if the broker delivers them again; rows not committed are simply redelivered.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::broker::AckReport;
use crate::broker::{Acker, Message};
use crate::error::{Result, StreamError};

pub const LEDGER_FILE: &str = "_stream_ledger.jsonl";
/// Rewrite the ledger (keeping only unacknowledged rows) once it has grown this much.
const COMPACT_BYTES: u64 = 16 << 20;
/// Acknowledged ids remembered, to drop a redelivery that crossed our acknowledgement.
const RECENT_ACKED: usize = 100_000;
/// Ids per acknowledgement request.
const ACK_BATCH: usize = 5_000;

#[derive(Serialize, Deserialize)]
struct Line {
    row: u64,
    ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    acks: Vec<String>,
}

struct Entry {
    row: u64,
    id: String,
    ack: Option<String>,
}

pub struct Ledger {
    path: PathBuf,
    file: File,
    file_bytes: u64,
    /// Rows handed to the engine and not yet acknowledged, in row order.
    pending: VecDeque<Entry>,
    pending_ids: HashSet<String>,
    /// Committed by an earlier run (and acknowledged at start): drop if delivered again.
    done_before: HashSet<String>,
    recent: VecDeque<String>,
    recent_ids: HashSet<String>,
    /// Malformed messages set aside as dead letters, by the input row they stand before:
    /// acknowledged once a manifest that lists their dead letter is written.
    malformed: VecDeque<(u64, String, Option<String>)>,
    malformed_ids: HashSet<String>,
    acker: Box<dyn Acker>,
    acked: u64,
}

impl Ledger {
    /// Opens the ledger of `dir`, whose parts hold input rows `0..committed_rows`:
    /// acknowledges the messages of those rows left unacknowledged by a crash, and starts
    /// a fresh ledger.
    pub fn open(dir: &Path, committed_rows: u64, mut acker: Box<dyn Acker>) -> Result<Self> {
        let path = dir.join(LEDGER_FILE);
        let mut committed = Vec::new();
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).lines() {
                let line = line.map_err(|e| StreamError::io(&path, e))?;
                if line.trim().is_empty() {
                    continue;
                }
                // A line cut short by a crash was written before its rows reached the
                // engine: they cannot be committed, so it is safe to ignore.
                let Ok(entry) = serde_json::from_str::<Line>(&line) else {
                    continue;
                };
                for (i, id) in entry.ids.iter().enumerate() {
                    if entry.row + (i as u64) < committed_rows {
                        committed.push((id.clone(), entry.acks.get(i).cloned()));
                    }
                }
            }
        }
        for batch in committed.chunks(ACK_BATCH) {
            acker.ack(batch)?;
        }
        let done_before = committed.into_iter().map(|(id, _)| id).collect();
        let tmp = dir.join(format!(".{LEDGER_FILE}.tmp"));
        File::create(&tmp).map_err(|e| StreamError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| StreamError::io(&path, e))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| StreamError::io(&path, e))?;
        Ok(Ledger {
            path,
            file,
            file_bytes: 0,
            pending: VecDeque::new(),
            pending_ids: HashSet::new(),
            done_before,
            recent: VecDeque::new(),
            recent_ids: HashSet::new(),
            malformed: VecDeque::new(),
            malformed_ids: HashSet::new(),
            acker,
            acked: 0,
        })
    }

    /// Delivered again while in hand, or already committed: not to be output again.
    pub fn is_duplicate(&self, id: &str) -> bool {
        self.pending_ids.contains(id)
            || self.malformed_ids.contains(id)
            || self.done_before.contains(id)
            || self.recent_ids.contains(id)
    }

    /// Committed by an earlier run or acknowledged by this one.
    pub fn was_committed(&self, id: &str) -> bool {
        self.done_before.contains(id) || self.recent_ids.contains(id)
    }

    /// Records that rows `first_row..` are `messages`, before the engine gets them.
    pub fn record(&mut self, first_row: u64, messages: &[Message]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let line = Line {
            row: first_row,
            ids: messages.iter().map(|m| m.id.clone()).collect(),
            acks: if messages.iter().any(|m| m.ack.is_some()) {
                messages
                    .iter()
                    .map(|m| m.ack.clone().unwrap_or_default())
                    .collect()
            } else {
                Vec::new()
            },
        };
        self.append(&line)?;
        for (i, m) in messages.iter().enumerate() {
            self.pending_ids.insert(m.id.clone());
            self.pending.push_back(Entry {
                row: first_row + i as u64,
                id: m.id.clone(),
                ack: m.ack.clone(),
            });
        }
        Ok(())
    }

    fn append(&mut self, line: &Line) -> Result<()> {
        let mut text = serde_json::to_string(line).map_err(|e| StreamError::io(&self.path, e))?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .map_err(|e| StreamError::io(&self.path, e))?;
        self.file_bytes += text.len() as u64;
        Ok(())
    }

    /// Malformed messages set aside just before input row `position` (the engine's rejects):
    /// held until a manifest listing their dead letter is written (see [`Self::commit_through`]).
    /// Holding one again moves it to `position`.
    pub fn hold_malformed(&mut self, position: u64, messages: Vec<(String, Option<String>)>) {
        for (id, ack) in messages {
            if !self.malformed_ids.insert(id.clone()) {
                self.malformed.retain(|m| m.1 != id);
            }
            // Positions only grow, so the queue stays in order.
            self.malformed.push_back((position, id, ack));
        }
    }

    /// Rows before `row_end` are committed (or were dropped by the error policy):
    /// acknowledges their messages, and the malformed ones set aside before them (their
    /// dead letters rode with earlier chunks, so the same manifest lists them). Returns how
    /// many rows.
    pub fn commit_through(&mut self, row_end: u64) -> Result<usize> {
        let mut done = Vec::new();
        while self.pending.front().is_some_and(|e| e.row < row_end) {
            let e = self.pending.pop_front().expect("front exists");
            done.push((e.id, e.ack));
        }
        let rows = done.len();
        while self.malformed.front().is_some_and(|m| m.0 < row_end) {
            let (_, id, ack) = self.malformed.pop_front().expect("front exists");
            self.malformed_ids.remove(&id);
            done.push((id, ack));
        }
        self.settle(done)?;
        Ok(rows)
    }

    /// Acknowledges every malformed message still held: the run ended, and its final
    /// manifest lists every dead letter it wrote.
    pub fn release_malformed(&mut self) -> Result<usize> {
        let done: Vec<(String, Option<String>)> = self
            .malformed
            .drain(..)
            .map(|(_, id, ack)| (id, ack))
            .collect();
        self.malformed_ids.clear();
        let n = done.len();
        self.settle(done)?;
        Ok(n)
    }

    /// Acknowledges `done` and remembers their ids, so a redelivery is dropped.
    fn settle(&mut self, done: Vec<(String, Option<String>)>) -> Result<()> {
        self.ack_now(&done)?;
        for (id, _) in done {
            self.pending_ids.remove(&id);
            self.remember(id);
        }
        if self.file_bytes > COMPACT_BYTES {
            self.compact()?;
        }
        Ok(())
    }

    /// Acknowledges messages that never become rows and are not output (duplicates).
    pub fn ack_now(&mut self, messages: &[(String, Option<String>)]) -> Result<()> {
        for batch in messages.chunks(ACK_BATCH) {
            self.acker.ack(batch)?;
        }
        self.acked += messages.len() as u64;
        Ok(())
    }

    fn remember(&mut self, id: String) {
        if self.recent_ids.insert(id.clone()) {
            self.recent.push_back(id);
        }
        while self.recent.len() > RECENT_ACKED {
            if let Some(old) = self.recent.pop_front() {
                self.recent_ids.remove(&old);
            }
        }
    }

    /// Rewrites the file with the unacknowledged rows only.
    fn compact(&mut self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".{LEDGER_FILE}.tmp"));
        let mut out = File::create(&tmp).map_err(|e| StreamError::io(&tmp, e))?;
        let mut bytes = 0u64;
        for e in &self.pending {
            let line = Line {
                row: e.row,
                ids: vec![e.id.clone()],
                acks: e.ack.iter().cloned().collect(),
            };
            let mut text = serde_json::to_string(&line).map_err(|e| StreamError::io(&tmp, e))?;
            text.push('\n');
            out.write_all(text.as_bytes())
                .map_err(|e| StreamError::io(&tmp, e))?;
            bytes += text.len() as u64;
        }
        drop(out);
        std::fs::rename(&tmp, &self.path).map_err(|e| StreamError::io(&self.path, e))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| StreamError::io(&self.path, e))?;
        self.file_bytes = bytes;
        Ok(())
    }

    /// Messages acknowledged by this run so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Rows handed to the engine and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.pending.len()
    }

    /// Messages this run holds unacknowledged: its uncommitted rows and the malformed
    /// ones whose dead letters are not yet listed.
    pub fn in_hand(&self) -> usize {
        self.pending.len() + self.malformed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Acker for Recorder {
        fn ack(&mut self, messages: &[(String, Option<String>)]) -> Result<AckReport> {
            let mut acked = self.0.lock().expect("lock");
            acked.extend(messages.iter().map(|(id, _)| id.clone()));
            Ok(AckReport {
                confirmed: messages.len() as u64,
                ..AckReport::default()
            })
        }
    }

    fn msgs(ids: std::ops::Range<u32>) -> Vec<Message> {
        ids.map(|i| Message {
            id: format!("m{i}"),
            ack: None,
            data: Vec::new(),
            extra: Vec::new(),
        })
        .collect()
    }

    #[test]
    fn committed_rows_are_acked_on_restart_and_their_redeliveries_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Recorder::default();
        let mut ledger = Ledger::open(dir.path(), 0, Box::new(first.clone())).expect("open");
        ledger.record(0, &msgs(0..10)).expect("record");
        ledger.record(10, &msgs(10..20)).expect("record");
        ledger.commit_through(5).expect("commit");
        assert_eq!(first.0.lock().expect("lock").len(), 5);
        assert!(ledger.is_duplicate("m12"), "in hand");
        drop(ledger); // a crash: rows 5..15 committed (say), not acknowledged
        let second = Recorder::default();
        let ledger = Ledger::open(dir.path(), 15, Box::new(second.clone())).expect("reopen");
        let acked = second.0.lock().expect("lock").clone();
        let expected: Vec<String> = (0..15).map(|i| format!("m{i}")).collect();
        assert_eq!(acked, expected, "the committed rows' messages");
        assert!(ledger.is_duplicate("m14"));
        assert!(
            !ledger.is_duplicate("m15"),
            "not committed: to be processed again"
        );
    }
}
