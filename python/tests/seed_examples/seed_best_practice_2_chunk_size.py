# From the seed document (streaming_pipeline.md), block 9; changed only by
# python/tests/seed_examples/_extract.py CHANGES (the import, shorter sleeps).
# Start with reasonable chunk size and let adaptive batching optimize
initial_chunk_size = max(100, min(10000, data_size // 100))
