//! A source fed while the run goes: frames sent from other threads through a bounded
//! channel. The reader pulls a frame only when admission lets it, so a full engine fills
//! the channel and `send` blocks: backpressure reaches the producer. Small frames are cut
//! into one chunk after `max_latency` even if the chunk is short (see `flush_requested`).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{LatencyClock, PartHint, Source, SourcePart};
use crate::error::{Result, SluiceError};

/// How often a reader waiting for frames looks up (so a stopped run's reader can leave).
const IDLE_TICK: Duration = Duration::from_millis(100);

struct Frame {
    batch: RecordBatch,
    sent_at: Instant,
}

/// When each sent row was sent: rows are numbered in send order, as the engine numbers its
/// input rows, so a processed chunk's `input_rows` find their send times here.
#[derive(Default)]
pub struct SendTimes {
    /// `(end_row, sent_at)` of each frame not yet handed over, in row order.
    frames: VecDeque<(u64, Instant)>,
    /// Rows sent so far.
    rows: u64,
    /// Rows before the first frame still listed.
    first_row: u64,
}

impl SendTimes {
    /// Removes the frames that rows `rows` covered and gives `(rows, latency)` for each
    /// overlap, measured to `now`. Chunks come in row order, so this pops from the front.
    pub fn take(&mut self, rows: &Range<u64>, now: Instant) -> Vec<(u64, Duration)> {
        let mut out = Vec::new();
        while let Some(&(end, sent_at)) = self.frames.front() {
            let start = self.first_row;
            let overlap = end.min(rows.end).saturating_sub(start.max(rows.start));
            if overlap > 0 {
                out.push((overlap, now.saturating_duration_since(sent_at)));
            }
            if end <= rows.end {
                self.frames.pop_front();
                self.first_row = end;
            } else {
                // Later rows of this frame are still on their way: count them then.
                self.first_row = self.first_row.max(rows.end);
                break;
            }
        }
        out
    }
}

/// The producer's end of a push source. Clone it to send from several threads; `close`
/// (or dropping every clone) ends the input.
#[derive(Clone)]
pub struct PushSender {
    inner: Arc<SenderInner>,
}

struct SenderInner {
    schema: SchemaRef,
    /// `None` once closed. Held while sending, so rows are numbered in channel order.
    channel: Mutex<Option<Sender<Frame>>>,
    times: Arc<Mutex<SendTimes>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PushSender {
    /// Sends one frame; blocks while the engine is full. Fails after `close()`, when the
    /// run is gone, or if the frame's columns differ from the stream's.
    pub fn send(&self, batch: RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.inner.schema.fields() {
            return Err(SluiceError::Source {
                source_name: "push stream".into(),
                message: format!(
                    "frame has columns {:?}, the stream has {:?}",
                    batch.schema(),
                    self.inner.schema
                ),
            });
        }
        let closed = || SluiceError::Source {
            source_name: "push stream".into(),
            message: "the stream is closed: nothing can be sent after close()".into(),
        };
        let channel = lock(&self.inner.channel);
        let Some(sender) = channel.as_ref() else {
            return Err(closed());
        };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let sent_at = Instant::now();
        {
            let mut times = lock(&self.inner.times);
            times.rows += batch.num_rows() as u64;
            let end = times.rows;
            times.frames.push_back((end, sent_at));
        }
        sender
            .send(Frame { batch, sent_at })
            .map_err(|_| SluiceError::Source {
                source_name: "push stream".into(),
                message: "the run has stopped: the frame was not taken".into(),
            })
    }

    /// No more frames: the run drains what was sent and ends.
    pub fn close(&self) {
        lock(&self.inner.channel).take();
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.inner.channel).is_none()
    }

    pub fn schema(&self) -> SchemaRef {
        self.inner.schema.clone()
    }

    /// Send times of the rows not yet handed over (for end-to-end latency).
    pub fn send_times(&self) -> Arc<Mutex<SendTimes>> {
        self.inner.times.clone()
    }
}

/// The engine's end: yields frames in send order and asks for a short chunk to be cut once
/// its oldest row has waited `max_latency`.
pub struct PushSource {
    schema: SchemaRef,
    frames: Receiver<Frame>,
    /// Counts from each row's send time.
    clock: LatencyClock,
    flush: bool,
}

/// A push source and its sender. `capacity` frames may wait in the channel (outside the
/// budget: keep it small).
pub fn push_channel(
    schema: SchemaRef,
    max_latency: Duration,
    capacity: usize,
) -> (PushSender, PushSource) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let sender = PushSender {
        inner: Arc::new(SenderInner {
            schema: schema.clone(),
            channel: Mutex::new(Some(tx)),
            times: Arc::default(),
        }),
    };
    let source = PushSource {
        schema,
        frames: rx,
        clock: LatencyClock::new(max_latency),
        flush: false,
    };
    (sender, source)
}

impl PushSource {
    fn tick(&self) -> Result<Option<(SourcePart, u64)>> {
        Ok(Some((
            SourcePart::Ready(RecordBatch::new_empty(self.schema.clone())),
            0,
        )))
    }
}

impl Source for PushSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn name(&self) -> String {
        "push stream".into()
    }

    fn next_part(&mut self, hint: PartHint) -> Result<Option<(SourcePart, u64)>> {
        self.flush = false;
        let frame = match self.frames.recv_timeout(self.clock.wait(IDLE_TICK)) {
            Ok(frame) => frame,
            Err(RecvTimeoutError::Disconnected) => return Ok(None),
            Err(RecvTimeoutError::Timeout) => {
                // The oldest row has waited long enough: cut what the engine holds.
                self.flush = self.clock.idle();
                // An empty part gives the reader its turn (to cut, or to see a stop).
                return self.tick();
            }
        };
        self.flush = self
            .clock
            .arrived(frame.batch.num_rows(), hint.rows, frame.sent_at);
        Ok(Some((SourcePart::Ready(frame.batch), 0)))
    }

    fn flush_requested(&self) -> bool {
        self.flush
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_that_keep_coming_still_cut_a_short_chunk_once_the_oldest_row_waited() {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("n", arrow::datatypes::DataType::Int64, false),
        ]));
        let frame = |n: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(arrow::array::Int64Array::from(vec![n]))],
            )
            .expect("frame")
        };
        // Every row has waited long enough by the next frame.
        let (sender, mut source) = push_channel(schema.clone(), Duration::ZERO, 4);
        sender.send(frame(1)).expect("send");
        sender.send(frame(2)).expect("send");
        let hint = PartHint {
            rows: 1000,
            bytes: 1 << 20,
        };
        source.next_part(hint).expect("first").expect("part");
        assert!(
            !source.flush_requested(),
            "nothing waited before the first row"
        );
        let (part, _) = source.next_part(hint).expect("second").expect("part");
        let SourcePart::Ready(batch) = part else {
            panic!("pushed frames are ready");
        };
        assert_eq!(batch.num_rows(), 1, "the second frame, not a tick");
        assert!(
            source.flush_requested(),
            "two rows of a 1000-row chunk, the first past its latency: cut now"
        );
    }

    #[test]
    fn send_times_split_frames_across_chunks() {
        let t0 = Instant::now();
        let mut times = SendTimes::default();
        times.frames.extend([(3, t0), (10, t0)]);
        times.rows = 10;
        let now = t0 + Duration::from_millis(5);
        let first = times.take(&(0..5), now);
        assert_eq!(first.iter().map(|(n, _)| n).sum::<u64>(), 5);
        let second = times.take(&(5..10), now);
        assert_eq!(second, vec![(5, Duration::from_millis(5))]);
        assert!(times.frames.is_empty());
    }
}
