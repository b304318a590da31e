# From the seed document (streaming_pipeline.md), block 4; changed only by
# python/tests/seed_examples/_extract.py CHANGES (the import, shorter sleeps).
from sluice import StreamingDataPipeline, BackpressureController
import pandas as pd
import numpy as np
import psutil
import time

class MemoryAwareStreamingPipeline:
    """Enhanced pipeline with advanced memory management"""
    
    def __init__(self, memory_limit_percentage=80):
        # Calculate memory limit based on system memory
        total_memory_mb = psutil.virtual_memory().total / 1024 / 1024
        memory_limit = total_memory_mb * (memory_limit_percentage / 100)
        
        self.pipeline = StreamingDataPipeline(
            chunk_size=2000,
            max_memory_mb=memory_limit,
            enable_parallel=True,
            num_workers=psutil.cpu_count()
        )
        
        print(f"Memory limit set to {memory_limit:.1f} MB ({memory_limit_percentage}% of {total_memory_mb:.1f} MB)")
    
    def process_with_memory_monitoring(self, df, processing_func):
        """Process data with real-time memory monitoring"""
        initial_memory = psutil.Process().memory_info().rss / 1024 / 1024
        print(f"Initial memory usage: {initial_memory:.1f} MB")
        
        memory_history = []
        chunk_count = 0
        
        for processed_chunk in self.pipeline.process_dataframe_stream(df, processing_func):
            current_memory = psutil.Process().memory_info().rss / 1024 / 1024
            memory_history.append(current_memory)
            chunk_count += 1
            
            # Print memory usage every 10 chunks
            if chunk_count % 10 == 0:
                print(f"Chunk {chunk_count}: Memory usage {current_memory:.1f} MB")
                
                # Force garbage collection if memory usage is high
                if current_memory > initial_memory * 2:
                    import gc
                    gc.collect()
                    after_gc_memory = psutil.Process().memory_info().rss / 1024 / 1024
                    print(f"  After GC: {after_gc_memory:.1f} MB")
            
            yield processed_chunk
        
        print(f"Memory usage history: min={min(memory_history):.1f}, max={max(memory_history):.1f}, avg={sum(memory_history)/len(memory_history):.1f} MB")

# Complex processing function that uses significant memory
def memory_intensive_processing(chunk: pd.DataFrame) -> pd.DataFrame:
    """Processing function that creates temporary large objects"""
    
    # Create temporary large arrays for processing
    temp_data = np.random.randn(len(chunk), 100)  # Large temporary array
    
    # Simulate complex feature engineering
    processed = chunk.copy()
    
    # Add polynomial features (memory intensive)
    for i in range(3):
        for col in ['feature_1', 'feature_2', 'feature_3']:
            processed[f'{col}_poly_{i+2}'] = processed[col] ** (i + 2)
    
    # Add rolling statistics (using temporary data)
    window_size = min(50, len(chunk))
    if window_size > 1:
        for col in processed.select_dtypes(include=[np.number]).columns:
            processed[f'{col}_rolling_mean'] = processed[col].rolling(window=window_size, min_periods=1).mean()
    
    # Simulate computation with temporary array
    correlation_matrix = np.corrcoef(temp_data.T)
    
    # Add some features based on correlation
    if correlation_matrix.shape[0] > 10:
        processed['temp_feature'] = np.sum(correlation_matrix[:10, :10])
    
    # Clean up temporary data explicitly
    del temp_data, correlation_matrix
    
    return processed

# Test memory-aware processing
memory_pipeline = MemoryAwareStreamingPipeline(memory_limit_percentage=60)

# Create large dataset
large_df = create_large_dataset(50000)
print(f"Processing dataset with {len(large_df)} rows...")

# Process with memory monitoring
processed_count = 0
for processed_chunk in memory_pipeline.process_with_memory_monitoring(
    large_df, 
    memory_intensive_processing
):
    processed_count += 1
    
    # Only keep last few chunks in memory to simulate real streaming
    if processed_count > 5:
        # In real scenario, you'd save to disk or send to next stage
        pass

print(f"Successfully processed {processed_count} chunks")
