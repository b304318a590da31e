# From the seed document (streaming_pipeline.md), block 3; changed only by
# python/tests/seed_examples/_extract.py CHANGES (the import, shorter sleeps).
from sluice import StreamingDataPipeline
import pandas as pd
import numpy as np
import time

# Create sample large dataset
def create_large_dataset(num_rows=100000):
    """Create a large dataset for streaming processing demo"""
    return pd.DataFrame({
        'feature_1': np.random.randn(num_rows),
        'feature_2': np.random.randn(num_rows),
        'feature_3': np.random.randn(num_rows),
        'category': np.random.choice(['A', 'B', 'C'], num_rows),
        'target': np.random.randint(0, 2, num_rows)
    })

# Define processing function
def data_preprocessing(chunk: pd.DataFrame) -> pd.DataFrame:
    """Example preprocessing function for each chunk"""
    # Simulate some processing time
    time.sleep(0.01)
    
    # Example transformations
    processed = chunk.copy()
    
    # Feature engineering
    processed['feature_interaction'] = processed['feature_1'] * processed['feature_2']
    processed['feature_sum'] = processed['feature_1'] + processed['feature_2'] + processed['feature_3']
    
    # Categorical encoding
    processed = pd.get_dummies(processed, columns=['category'], prefix='cat')
    
    # Normalization (simple example)
    numeric_columns = ['feature_1', 'feature_2', 'feature_3', 'feature_interaction', 'feature_sum']
    for col in numeric_columns:
        mean_val = processed[col].mean()
        std_val = processed[col].std()
        if std_val > 0:
            processed[col] = (processed[col] - mean_val) / std_val
    
    return processed

# Initialize streaming pipeline
pipeline = StreamingDataPipeline(
    chunk_size=5000,        # Process 5000 rows at a time
    max_memory_mb=500,      # 500MB memory limit
    enable_parallel=True,   # Enable parallel processing
    num_workers=4          # Use 4 worker threads
)

# Create test dataset
print("Creating test dataset...")
df = create_large_dataset(100000)
print(f"Dataset created: {df.shape}")

# Process dataset in streaming fashion
print("Starting streaming processing...")
processed_chunks = []
start_time = time.time()

for i, processed_chunk in enumerate(pipeline.process_dataframe_stream(
    df=df,
    processing_function=data_preprocessing,
    output_path="processed_data"  # Save chunks to files
)):
    processed_chunks.append(processed_chunk)
    
    # Print progress every 5 chunks
    if (i + 1) % 5 == 0:
        print(f"Processed chunk {i + 1}, shape: {processed_chunk.shape}")

total_time = time.time() - start_time

# Combine results (if memory allows)
if len(processed_chunks) < 50:  # Only combine if reasonable number of chunks
    final_result = pd.concat(processed_chunks, ignore_index=True)
    print(f"Final result shape: {final_result.shape}")
else:
    print(f"Processed {len(processed_chunks)} chunks (too many to combine in memory)")

# Get performance statistics
stats = pipeline.get_stats()
print(f"\nPerformance Statistics:")
print(f"  Total processing time: {total_time:.2f}s")
print(f"  Chunks processed: {stats.total_chunks_processed}")
print(f"  Rows processed: {stats.total_rows_processed}")
print(f"  Throughput: {stats.throughput_rows_per_second:.1f} rows/sec")
print(f"  Peak memory usage: {stats.memory_peak_mb:.1f} MB")
print(f"  Backpressure events: {stats.backpressure_events}")
