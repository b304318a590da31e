//! The push API: `open_stream` starts a run fed by `send` from any thread (the seed's
//! real-time example without its hand-made queue and buffer). Frames are coalesced into
//! chunks of up to `chunk_size` rows or `max_latency`, whichever comes first; results come
//! back in send order, and each row's send-to-hand-over time feeds the latency figures.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::chunk::ProcessedChunk;
use crate::error::{BoxError, Result};
use crate::pipeline::StreamingDataPipeline;
use crate::sink::OutputOptions;
use crate::source::push::{push_channel, SendTimes};
use crate::source::PushSender;
use crate::stats::{StatsCollector, StreamingStats};
use crate::stream::ChunkStream;

/// Settings of [`StreamingDataPipeline::open_stream`].
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// A short chunk is cut once its oldest row has waited this long (default 100 ms).
    pub max_latency: Duration,
    /// Also write every chunk as part files (flushed at `close`).
    pub output: Option<OutputOptions>,
    /// Frames that may wait between `send` and the engine [default: workers, at least 2].
    pub capacity: Option<usize>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            max_latency: Duration::from_millis(100),
            output: None,
            capacity: None,
        }
    }
}

/// Records, for each processed chunk handed over, its rows' time since `send`.
#[derive(Clone)]
pub struct Deliveries {
    times: Arc<Mutex<SendTimes>>,
    stats: Arc<StatsCollector>,
}

impl Deliveries {
    /// The chunk made from input rows `rows` is being handed over now.
    pub fn delivered(&self, rows: &Range<u64>) {
        let now = Instant::now();
        let spans = self
            .times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(rows, now);
        for (n, latency) in spans {
            self.stats.rows_delivered_after(n, latency);
        }
    }
}

/// The processed chunks of a push stream, in send order; ends after `close` and the drain.
pub struct StreamResults {
    stream: ChunkStream,
    deliveries: Deliveries,
}

impl StreamResults {
    pub fn stats(&self) -> StreamingStats {
        self.stream.stats()
    }

    /// The engine's stream and the latency recorder, for bindings that drive it themselves.
    pub fn into_parts(self) -> (ChunkStream, Deliveries) {
        (self.stream, self.deliveries)
    }
}

impl Iterator for StreamResults {
    type Item = Result<ProcessedChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.stream.next()?;
        if let Ok(chunk) = &item {
            self.deliveries.delivered(&chunk.input_rows);
        }
        Some(item)
    }
}

/// An open push stream: `sender()` to send (from any thread), `results` to read.
pub struct PushStream {
    pub sender: PushSender,
    pub results: StreamResults,
}

impl StreamingDataPipeline {
    /// Opens a stream of frames of `schema`, each chunk run through `function`.
    pub fn open_stream<F, E>(
        &self,
        schema: SchemaRef,
        function: F,
        options: StreamOptions,
    ) -> Result<PushStream>
    where
        F: Fn(RecordBatch) -> std::result::Result<RecordBatch, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        let function = Arc::new(move |b: RecordBatch| function(b).map_err(Into::into));
        self.open_stream_boxed(schema, function, options)
    }

    /// What records the latency of the rows `sender` sends, for bindings that start the
    /// run themselves (with a [`crate::source::PushSource`]).
    pub fn deliveries(&self, sender: &PushSender) -> Deliveries {
        Deliveries {
            times: sender.send_times(),
            stats: self.stats_collector(),
        }
    }

    /// [`Self::open_stream`] with an already boxed function (for bindings).
    pub fn open_stream_boxed(
        &self,
        schema: SchemaRef,
        function: Arc<
            dyn Fn(RecordBatch) -> std::result::Result<RecordBatch, BoxError> + Send + Sync,
        >,
        options: StreamOptions,
    ) -> Result<PushStream> {
        let capacity = options
            .capacity
            .unwrap_or_else(|| self.config().effective_workers().max(2));
        let (sender, source) = push_channel(schema, options.max_latency, capacity);
        let stream = self.start_boxed(Box::new(source), function, options.output)?;
        let deliveries = self.deliveries(&sender);
        Ok(PushStream {
            sender,
            results: StreamResults { stream, deliveries },
        })
    }
}
