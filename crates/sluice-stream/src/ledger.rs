//! Exactly once across crashes. Before the source hands rows to the engine, it appends to
//! `_stream_ledger.jsonl` which message each row is (`{"row": first, "ids": [...]}`) and
//! syncs it. A message is acknowledged only once the part holding its row is committed
//! (the manifest, synced, lists parts by input rows). On restart the manifest says which
//! rows are committed: the ledger acknowledges their messages and drops them if delivered
//! again, and hands the others back to the broker (they come again and are processed
//! once). Its first line names the stream (`{"stream": ...}`): another stream's folder is
//! refused, since its ids mean nothing here.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::broker::{AckReport, Acker, Message, StreamIdentity};
use crate::error::{Result, StreamError};

pub const LEDGER_FILE: &str = "_stream_ledger.jsonl";
/// Rewrite the ledger (keeping only what a redelivery can still bring) once it has grown
/// this much.
const COMPACT_BYTES: u64 = 16 << 20;
/// Acknowledged ids remembered (in memory and in the ledger), to drop a redelivery that
/// crossed our acknowledgement or whose acknowledgement was lost.
const RECENT_ACKED: usize = 100_000;
/// Ids per acknowledgement request, and per line of remembered ids.
const ACK_BATCH: usize = 5_000;

/// One line of the ledger.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Record {
    /// The first line: which stream the ids belong to.
    Stream { stream: StreamIdentity },
    /// Input rows `row..` are these messages (handed to the engine after this line).
    Rows {
        row: u64,
        ids: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        acks: Vec<String>,
    },
    /// Messages acknowledged before the ledger was rewritten: dropped if they come again.
    Done { done: Vec<String> },
}

struct Entry {
    row: u64,
    id: String,
    ack: Option<String>,
}

/// What a ledger file says.
#[derive(Default)]
struct Read {
    identity: Option<StreamIdentity>,
    committed: Vec<(String, Option<String>)>,
    uncommitted: Vec<(String, Option<String>)>,
    done: Vec<String>,
}

pub struct Ledger {
    path: PathBuf,
    identity: StreamIdentity,
    file: File,
    file_bytes: u64,
    compact_bytes: u64,
    /// Rows handed to the engine and not yet acknowledged, in row order.
    pending: VecDeque<Entry>,
    pending_ids: HashSet<String>,
    /// Acknowledged (by this run, or committed by an earlier one), oldest first: dropped
    /// if delivered again. Kept in the ledger by every rewrite, so a restart knows them.
    recent: Recent,
    /// Malformed messages set aside as dead letters, by the input row they stand before:
    /// acknowledged once a manifest that lists their dead letter is written.
    malformed: VecDeque<(u64, String, Option<String>)>,
    malformed_ids: HashSet<String>,
    acker: Box<dyn Acker>,
    acks: AckReport,
    released: u64,
}

/// The stream as a person reads it, in errors.
fn describe(identity: &StreamIdentity) -> String {
    let mut text = format!(
        "stream {:?} of {} read by {:?}",
        identity.stream, identity.broker, identity.consumer
    );
    if let Some(incarnation) = &identity.incarnation {
        text.push_str(&format!(" (created {incarnation})"));
    }
    text
}

impl Ledger {
    /// Opens the ledger of `dir` for the stream `identity`, whose committed parts hold
    /// input rows `0..committed_rows`: refuses a ledger of another stream (one without a
    /// stream line, from before they had one, is adopted); acknowledges the messages of the
    /// committed rows that a crash left unacknowledged; hands the messages of rows that
    /// were not committed back to the broker ([`Acker::release`]) so they come again now;
    /// and starts a fresh ledger that remembers the acknowledged ids.
    pub fn open(
        dir: &Path,
        identity: StreamIdentity,
        committed_rows: u64,
        mut acker: Box<dyn Acker>,
    ) -> Result<Self> {
        let path = dir.join(LEDGER_FILE);
        let read = read_ledger(&path, committed_rows)?;
        if let Some(theirs) = &read.identity {
            // A ledger written before the broker told incarnations apart is adopted, as
            // one without a stream line is; any other difference is another stream.
            let upgraded = theirs.incarnation.is_none()
                && StreamIdentity {
                    incarnation: None,
                    ..identity.clone()
                } == *theirs;
            if *theirs != identity && !upgraded {
                return Err(StreamError::Output {
                    dir: dir.to_path_buf(),
                    reason: format!(
                        "its {LEDGER_FILE} belongs to {}, not to {}: message ids of one \
                         stream mean nothing in another (or in one deleted and created \
                         again); use another output folder",
                        describe(theirs),
                        describe(&identity)
                    ),
                });
            }
        }
        let mut acks = AckReport::default();
        for batch in read.committed.chunks(ACK_BATCH) {
            acks.add(acker.ack(batch)?);
        }
        for batch in read.uncommitted.chunks(ACK_BATCH) {
            acker.release(batch)?;
        }
        let mut recent = Recent::default();
        for id in read
            .done
            .into_iter()
            .chain(read.committed.into_iter().map(|(id, _)| id))
        {
            recent.remember(id);
        }
        let pending = VecDeque::new();
        let (file, file_bytes) = write_ledger(&path, &identity, &recent.order, &pending)?;
        Ok(Ledger {
            path,
            identity,
            file,
            file_bytes,
            compact_bytes: COMPACT_BYTES,
            pending,
            pending_ids: HashSet::new(),
            recent,
            malformed: VecDeque::new(),
            malformed_ids: HashSet::new(),
            acker,
            acks,
            released: read.uncommitted.len() as u64,
        })
    }

    /// Delivered again while in hand, or already acknowledged: not to be output again.
    pub fn is_duplicate(&self, id: &str) -> bool {
        self.pending_ids.contains(id)
            || self.malformed_ids.contains(id)
            || self.recent.ids.contains(id)
    }

    /// Committed by an earlier run or acknowledged by this one.
    pub fn was_committed(&self, id: &str) -> bool {
        self.recent.ids.contains(id)
    }

    /// Records that rows `first_row..` are `messages`, durably, before the engine gets
    /// them: a row the manifest lists always has its message in the ledger.
    pub fn record(&mut self, first_row: u64, messages: &[Message]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let line = Record::Rows {
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
        // Measured (bench/RESULTS.md, "Durability"): one sync per fetched batch, at most
        // 10 000 messages.
        self.file
            .sync_data()
            .map_err(|e| StreamError::io(&self.path, e))?;
        sluice::failpoint::hit("after-ledger-write");
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

    fn append(&mut self, line: &Record) -> Result<()> {
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
        if done.len() >= 2 && sluice::failpoint::armed("between-acks") {
            // A crash between the acknowledgements of one commit: half of them reached
            // the broker, and the ledger has not moved on.
            let half = done.len() / 2;
            self.acker.ack(&done[..half])?;
            sluice::failpoint::crash("between-acks");
        }
        self.ack_now(&done)?;
        for (id, _) in done {
            self.pending_ids.remove(&id);
            self.recent.remember(id);
        }
        if self.file_bytes > self.compact_bytes {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Acknowledges messages that never become rows and are not output (duplicates).
    pub fn ack_now(&mut self, messages: &[(String, Option<String>)]) -> Result<()> {
        for batch in messages.chunks(ACK_BATCH) {
            let report = self.acker.ack(batch)?;
            self.acks.add(report);
        }
        Ok(())
    }

    /// Rewrites the file with what a redelivery can still bring (see [`write_ledger`]).
    fn rewrite(&mut self) -> Result<()> {
        let (file, bytes) = write_ledger(
            &self.path,
            &self.identity,
            &self.recent.order,
            &self.pending,
        )?;
        self.file = file;
        self.file_bytes = bytes;
        Ok(())
    }

    /// Messages the broker confirmed acknowledged by this run so far.
    pub fn acked(&self) -> u64 {
        self.acks.confirmed
    }

    /// Acknowledgements the broker never confirmed, retries included: those messages may
    /// come again (a committed one is then dropped as a duplicate while remembered).
    pub fn unconfirmed(&self) -> u64 {
        self.acks.unconfirmed
    }

    /// Everything this run's acknowledgements came to.
    pub fn ack_report(&self) -> AckReport {
        self.acks
    }

    /// Messages an earlier instance held uncommitted, handed back to the broker at open.
    pub fn released(&self) -> u64 {
        self.released
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

/// Reads a ledger file (none: empty). A last line cut short by a crash is ignored: it
/// was being written before its rows reached the engine, so they cannot be committed
/// (and its messages, never acknowledged, come again). Any other unreadable line is an
/// error: what it said is unknown.
fn read_ledger(path: &Path, committed_rows: u64) -> Result<Read> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Read::default()),
        Err(e) => return Err(StreamError::io(path, e)),
    };
    let mut read = Read::default();
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let last = lines.iter().rposition(|l| !l.trim_ascii().is_empty());
    let mut seen_any = false;
    for (n, line) in lines.iter().enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let record = match serde_json::from_slice::<Record>(line) {
            Ok(record) => record,
            Err(_) if Some(n) == last => break,
            Err(e) => {
                return Err(StreamError::io(
                    path,
                    format!("line {} cannot be read ({e}); the ledger is damaged", n + 1),
                ))
            }
        };
        let first = std::mem::replace(&mut seen_any, true);
        match record {
            Record::Stream { stream } if !first => read.identity = Some(stream),
            Record::Stream { .. } => {
                return Err(StreamError::io(
                    path,
                    format!("line {}: a stream line after the first", n + 1),
                ))
            }
            Record::Rows { row, ids, acks } => {
                for (i, id) in ids.into_iter().enumerate() {
                    let ack = acks.get(i).filter(|a| !a.is_empty()).cloned();
                    if row + (i as u64) < committed_rows {
                        read.committed.push((id, ack));
                    } else {
                        read.uncommitted.push((id, ack));
                    }
                }
            }
            Record::Done { done } => read.done.extend(done),
        }
    }
    Ok(read)
}

/// Acknowledged ids remembered, oldest first, at most `RECENT_ACKED`.
#[derive(Default)]
struct Recent {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Recent {
    fn remember(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > RECENT_ACKED {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

/// Writes a ledger holding the stream line, the ids remembered as acknowledged (`recent`:
/// what [`Ledger::is_duplicate`] drops, so a restart drops the same) and the rows not yet
/// acknowledged (`pending`), synced and renamed over the old one (a crash leaves one or
/// the other whole). Its size is bounded by `RECENT_ACKED` ids plus the rows in hand.
/// Returns it open for appending, and its size.
fn write_ledger(
    path: &Path,
    identity: &StreamIdentity,
    recent: &VecDeque<String>,
    pending: &VecDeque<Entry>,
) -> Result<(File, u64)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{LEDGER_FILE}.tmp"));
    let mut lines = vec![Record::Stream {
        stream: identity.clone(),
    }];
    let recent: Vec<String> = recent.iter().cloned().collect();
    lines.extend(
        recent
            .chunks(ACK_BATCH)
            .map(|ids| Record::Done { done: ids.to_vec() }),
    );
    lines.extend(pending.iter().map(|e| Record::Rows {
        row: e.row,
        ids: vec![e.id.clone()],
        acks: e.ack.iter().cloned().collect(),
    }));
    let mut text = String::new();
    for line in &lines {
        text.push_str(&serde_json::to_string(line).map_err(|e| StreamError::io(&tmp, e))?);
        text.push('\n');
    }
    let written = File::create(&tmp).and_then(|mut out| {
        out.write_all(text.as_bytes())?;
        out.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(StreamError::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| StreamError::io(path, e))?;
    sluice::sink::sync_dir(dir)?;
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| StreamError::io(path, e))?;
    Ok((file, text.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records what was acknowledged and released; confirms all but `unconfirmed` per request.
    #[derive(Clone, Default)]
    struct Recorder {
        acked: Arc<Mutex<Vec<String>>>,
        released: Arc<Mutex<Vec<String>>>,
        unconfirmed: u64,
    }

    impl Acker for Recorder {
        fn ack(&mut self, messages: &[(String, Option<String>)]) -> Result<AckReport> {
            let mut acked = self.acked.lock().expect("lock");
            acked.extend(messages.iter().map(|(id, _)| id.clone()));
            let unconfirmed = self.unconfirmed.min(messages.len() as u64);
            Ok(AckReport {
                confirmed: messages.len() as u64 - unconfirmed,
                retried: unconfirmed,
                unconfirmed,
                ..AckReport::default()
            })
        }
        fn release(&mut self, messages: &[(String, Option<String>)]) -> Result<()> {
            let mut released = self.released.lock().expect("lock");
            released.extend(messages.iter().map(|(id, _)| id.clone()));
            Ok(())
        }
    }

    impl Recorder {
        fn acked(&self) -> Vec<String> {
            self.acked.lock().expect("lock").clone()
        }
        fn released(&self) -> Vec<String> {
            self.released.lock().expect("lock").clone()
        }
    }

    fn stream(name: &str) -> StreamIdentity {
        StreamIdentity {
            broker: "redis://127.0.0.1:6379/".into(),
            stream: name.into(),
            consumer: "g".into(),
            incarnation: None,
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

    fn names(ids: std::ops::Range<u32>) -> Vec<String> {
        ids.map(|i| format!("m{i}")).collect()
    }

    #[test]
    fn committed_rows_are_acked_on_restart_and_their_redeliveries_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Recorder::default();
        let mut ledger =
            Ledger::open(dir.path(), stream("s"), 0, Box::new(first.clone())).expect("open");
        ledger.record(0, &msgs(0..10)).expect("record");
        ledger.record(10, &msgs(10..20)).expect("record");
        ledger.commit_through(5).expect("commit");
        assert_eq!(first.acked().len(), 5);
        assert!(ledger.is_duplicate("m12"), "in hand");
        drop(ledger); // a crash: rows 5..15 committed (say), not acknowledged
        let second = Recorder::default();
        let ledger =
            Ledger::open(dir.path(), stream("s"), 15, Box::new(second.clone())).expect("reopen");
        assert_eq!(second.acked(), names(0..15), "the committed rows' messages");
        assert_eq!(
            second.released(),
            names(15..20),
            "the rows a dead instance held uncommitted, handed back"
        );
        assert_eq!((ledger.acked(), ledger.released()), (15, 5));
        assert!(ledger.is_duplicate("m14"));
        assert!(
            !ledger.is_duplicate("m15"),
            "not committed: to be processed again"
        );
        drop(ledger);
        // A second crash before anything new: what was acknowledged is still known.
        let third = Recorder::default();
        let ledger =
            Ledger::open(dir.path(), stream("s"), 15, Box::new(third.clone())).expect("again");
        assert!(ledger.is_duplicate("m0") && ledger.is_duplicate("m14"));
        assert!(third.acked().is_empty() && third.released().is_empty());
    }

    #[test]
    fn a_ledger_of_another_stream_is_refused_naming_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger =
            Ledger::open(dir.path(), stream("a"), 0, Box::new(Recorder::default())).expect("a");
        ledger.record(0, &msgs(0..3)).expect("record");
        drop(ledger);
        let other = Recorder::default();
        let err = Ledger::open(dir.path(), stream("b"), 3, Box::new(other.clone()))
            .err()
            .expect("another stream");
        let text = err.to_string();
        assert!(
            matches!(err, StreamError::Output { .. })
                && text.contains("\"a\"")
                && text.contains("\"b\""),
            "{text}"
        );
        assert!(
            other.acked().is_empty() && other.released().is_empty(),
            "refused before acknowledging anything"
        );
        Ledger::open(dir.path(), stream("a"), 3, Box::new(other.clone())).expect("its own");
        assert_eq!(other.acked(), names(0..3));
        // Written before the broker knew incarnations: adopted, and from then on held to.
        let mut known = stream("a");
        known.incarnation = Some("2026-12-07T00:00:00Z".into());
        Ledger::open(dir.path(), known.clone(), 3, Box::new(other.clone())).expect("adopted");
        let mut recreated = known;
        recreated.incarnation = Some("2026-12-08T00:00:00Z".into());
        let err = Ledger::open(dir.path(), recreated, 3, Box::new(other.clone()))
            .err()
            .expect("created again since");
        let text = err.to_string();
        assert!(
            text.contains("created 2026-12-07") && text.contains("created 2026-12-08"),
            "{text}"
        );
    }

    #[test]
    fn a_ledger_without_a_stream_line_is_adopted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(LEDGER_FILE);
        std::fs::write(
            &path,
            "{\"row\":0,\"ids\":[\"m0\",\"m1\"]}\n{\"row\":2,\"ids\":[\"m2\",\"m3\"],\"acks\":[\"r2\",\"r3\"]}\n",
        )
        .expect("write");
        let acker = Recorder::default();
        let ledger =
            Ledger::open(dir.path(), stream("s"), 3, Box::new(acker.clone())).expect("open");
        assert_eq!(acker.acked(), names(0..3));
        assert_eq!(acker.released(), names(3..4));
        assert!(ledger.is_duplicate("m2") && !ledger.is_duplicate("m3"));
        drop(ledger);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.starts_with("{\"stream\":"),
            "now it names its stream: {text}"
        );
        let err = Ledger::open(dir.path(), stream("t"), 3, Box::new(acker))
            .err()
            .expect("and holds to it");
        assert!(matches!(err, StreamError::Output { .. }));
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_a_damaged_one_before_it_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger =
            Ledger::open(dir.path(), stream("s"), 0, Box::new(Recorder::default())).expect("open");
        ledger.record(0, &msgs(0..4)).expect("record");
        drop(ledger);
        let path = dir.path().join(LEDGER_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        // The crash came while the next line was being written.
        file.write_all(b"{\"row\":4,\"ids\":[\"m4\",\"m")
            .expect("write");
        drop(file);
        let acker = Recorder::default();
        let ledger =
            Ledger::open(dir.path(), stream("s"), 4, Box::new(acker.clone())).expect("torn");
        assert_eq!(acker.acked(), names(0..4));
        assert!(acker.released().is_empty() && !ledger.is_duplicate("m4"));
        drop(ledger);
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(
            &path,
            format!("{text}{{\"row\":4,\"ids\n{{\"row\":5,\"ids\":[]}}\n"),
        )
        .expect("write");
        let err = Ledger::open(dir.path(), stream("s"), 4, Box::new(Recorder::default()))
            .err()
            .expect("damaged");
        assert!(err.to_string().contains("cannot be read"), "{err}");
    }

    #[test]
    fn compaction_keeps_what_a_redelivery_can_still_bring() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger =
            Ledger::open(dir.path(), stream("s"), 0, Box::new(Recorder::default())).expect("open");
        ledger.compact_bytes = 2_000;
        let mut biggest = 0;
        for batch in 0..200u32 {
            let first = batch * 10;
            ledger
                .record(first as u64, &msgs(first..first + 10))
                .expect("record");
            // Commits lag one batch behind: some rows are always in hand.
            ledger.commit_through(first as u64).expect("commit");
            biggest = biggest.max(ledger.file_bytes);
        }
        assert!(
            biggest < 2_000 + 20 * 2_000,
            "rewritten as it grew: {biggest}"
        );
        drop(ledger);
        let acker = Recorder::default();
        let ledger =
            Ledger::open(dir.path(), stream("s"), 1990, Box::new(acker.clone())).expect("reopen");
        for i in 0..1990 {
            assert!(ledger.is_duplicate(&format!("m{i}")), "m{i} forgotten");
        }
        assert!(!ledger.is_duplicate("m1990"));
        assert_eq!(
            acker.released(),
            names(1990..2000),
            "in hand when it stopped"
        );
    }

    #[test]
    fn acknowledgements_not_confirmed_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let acker = Recorder {
            unconfirmed: 1,
            ..Recorder::default()
        };
        let mut ledger = Ledger::open(dir.path(), stream("s"), 0, Box::new(acker)).expect("open");
        ledger.record(0, &msgs(0..10)).expect("record");
        ledger.commit_through(4).expect("commit");
        ledger.commit_through(10).expect("commit");
        assert_eq!((ledger.acked(), ledger.unconfirmed()), (8, 2));
        assert_eq!(ledger.ack_report().retried, 2);
    }
}
