# From the seed document (streaming_pipeline.md), block 5; changed only by
# python/tests/seed_examples/_extract.py CHANGES (the import, shorter sleeps).
from sluice import StreamingDataPipeline
import pandas as pd
import numpy as np

try:
    import dask.dataframe as dd
    from dask.distributed import Client, as_completed
    DASK_AVAILABLE = True
except ImportError:
    DASK_AVAILABLE = False
    print("Dask not available, skipping distributed processing example")

if DASK_AVAILABLE:
    class DistributedStreamingPipeline:
        """Streaming pipeline with Dask distributed processing"""
        
        def __init__(self, scheduler_address=None):
            # Initialize Dask client
            if scheduler_address:
                self.client = Client(scheduler_address)
            else:
                self.client = Client(processes=False, threads_per_worker=2, n_workers=4)
            
            print(f"Dask client initialized: {self.client}")
            
            # Initialize streaming pipeline
            self.pipeline = StreamingDataPipeline(
                chunk_size=3000,
                enable_distributed=True,
                distributed_backend='dask',
                num_workers=4
            )
        
        def process_large_dataset_distributed(self, data_path_or_df, processing_func):
            """Process large dataset using Dask distributed computing"""
            
            if isinstance(data_path_or_df, str):
                # Load data as Dask DataFrame
                ddf = dd.read_parquet(data_path_or_df)
                print(f"Loaded Dask DataFrame with {len(ddf)} partitions")
            else:
                # Convert pandas DataFrame to Dask DataFrame
                ddf = dd.from_pandas(data_path_or_df, npartitions=8)
            
            # Process each partition
            def process_partition(partition):
                """Process a single partition"""
                return processing_func(partition)
            
            # Apply processing to all partitions
            processed_ddf = ddf.map_partitions(process_partition, meta=ddf)
            
            # Compute results partition by partition (streaming)
            partitions = processed_ddf.to_delayed()
            
            futures = self.client.compute(partitions)
            
            for future in as_completed(futures):
                try:
                    result = future.result()
                    yield result
                except Exception as e:
                    print(f"Error processing partition: {e}")
        
        def cleanup(self):
            """Clean up Dask resources"""
            self.client.close()
    
    # Example usage of distributed processing
    def distributed_processing_example():
        """Example of distributed streaming processing"""
        
        # Create distributed pipeline
        dist_pipeline = DistributedStreamingPipeline()
        
        try:
            # Create test dataset
            large_df = create_large_dataset(200000)
            
            # Define processing function
            def advanced_feature_engineering(chunk: pd.DataFrame) -> pd.DataFrame:
                """Advanced feature engineering for distributed processing"""
                processed = chunk.copy()
                
                # Complex transformations
                numeric_cols = chunk.select_dtypes(include=[np.number]).columns
                
                for col in numeric_cols:
                    # Statistical features
                    processed[f'{col}_zscore'] = (processed[col] - processed[col].mean()) / processed[col].std()
                    processed[f'{col}_rank'] = processed[col].rank(pct=True)
                    
                    # Binning
                    processed[f'{col}_bin'] = pd.cut(processed[col], bins=5, labels=False)
                
                # Interaction features
                if len(numeric_cols) > 1:
                    for i, col1 in enumerate(numeric_cols[:3]):
                        for col2 in numeric_cols[i+1:4]:
                            processed[f'{col1}_{col2}_interaction'] = processed[col1] * processed[col2]
                
                return processed
            
            # Process with distributed pipeline
            print("Starting distributed processing...")
            processed_partitions = []
            
            for i, partition_result in enumerate(dist_pipeline.process_large_dataset_distributed(
                large_df, 
                advanced_feature_engineering
            )):
                processed_partitions.append(partition_result)
                print(f"Processed partition {i+1}, shape: {partition_result.shape}")
            
            print(f"Distributed processing completed: {len(processed_partitions)} partitions")
            
        finally:
            dist_pipeline.cleanup()
    
    # Run distributed processing example
    if __name__ == "__main__":
        distributed_processing_example()
