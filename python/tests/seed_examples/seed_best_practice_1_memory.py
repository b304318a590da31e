# From the seed document (streaming_pipeline.md), block 8; changed only by
# python/tests/seed_examples/_extract.py CHANGES (the import, shorter sleeps).
# Configure appropriate memory limits
pipeline = StreamingDataPipeline(
    max_memory_mb=min(1000, psutil.virtual_memory().total / 1024 / 1024 * 0.5)
)
