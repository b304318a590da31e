# From the seed document (streaming_pipeline.md), block 11; changed only by
# python/tests/seed_examples/_extract.py CHANGES (the import, shorter sleeps).
try:
    for result in pipeline.process_dataframe_stream(df, processing_func):
        handle_result(result)
finally:
    pipeline.cleanup()  # Always cleanup resources
