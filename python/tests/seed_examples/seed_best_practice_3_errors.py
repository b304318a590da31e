# From the seed document (streaming_pipeline.md), block 10; changed only by
# python/tests/seed_examples/_extract.py CHANGES (the import, shorter sleeps).
def safe_processing_function(chunk):
    try:
        return your_processing_function(chunk)
    except Exception as e:
        logging.error(f"Processing error: {e}")
        return chunk  # Return original chunk on error
