# From the seed document (streaming_pipeline.md), block 6; changed only by
# python/tests/seed_examples/_extract.py CHANGES (the import, shorter sleeps).
from sluice import StreamingDataPipeline
import pandas as pd
import numpy as np
import time
import threading
import queue
from typing import Generator

class RealTimeStreamProcessor:
    """Real-time streaming processor with continuous data ingestion"""
    
    def __init__(self):
        self.pipeline = StreamingDataPipeline(
            chunk_size=1000,
            max_memory_mb=200,
            enable_parallel=True,
            num_workers=2
        )
        
        self.data_queue = queue.Queue(maxsize=100)
        self.is_running = False
        self.processing_thread = None
        
    def start_data_ingestion(self):
        """Start continuous data ingestion simulation"""
        def data_generator():
            """Simulate continuous data stream"""
            while self.is_running:
                # Generate batch of new data
                batch = pd.DataFrame({
                    'timestamp': [time.time()] * 100,
                    'sensor_1': np.random.randn(100),
                    'sensor_2': np.random.randn(100),
                    'sensor_3': np.random.randn(100),
                    'device_id': np.random.choice(['device_A', 'device_B', 'device_C'], 100)
                })
                
                try:
                    self.data_queue.put(batch, timeout=1)
                except queue.Full:
                    print("Data queue full, dropping batch")
                
                time.sleep(0.1)  # 100ms interval
        
        self.is_running = True
        self.ingestion_thread = threading.Thread(target=data_generator)
        self.ingestion_thread.start()
        print("Data ingestion started")
    
    def start_processing(self, processing_func, output_callback=None):
        """Start real-time processing of incoming data"""
        def process_stream():
            """Process data from queue continuously"""
            buffer = []
            buffer_size = 1000  # Accumulate data before processing
            
            while self.is_running:
                try:
                    # Get data from queue
                    batch = self.data_queue.get(timeout=1)
                    buffer.append(batch)
                    
                    # Process when buffer is full
                    if len(buffer) >= buffer_size // 100:  # Adjust threshold
                        combined_data = pd.concat(buffer, ignore_index=True)
                        buffer = []
                        
                        # Process the accumulated data
                        for processed_chunk in self.pipeline.process_dataframe_stream(
                            combined_data, 
                            processing_func
                        ):
                            if output_callback:
                                output_callback(processed_chunk)
                            else:
                                print(f"Processed chunk: {processed_chunk.shape}")
                
                except queue.Empty:
                    # Process any remaining data in buffer
                    if buffer:
                        combined_data = pd.concat(buffer, ignore_index=True)
                        buffer = []
                        
                        for processed_chunk in self.pipeline.process_dataframe_stream(
                            combined_data, 
                            processing_func
                        ):
                            if output_callback:
                                output_callback(processed_chunk)
        
        self.processing_thread = threading.Thread(target=process_stream)
        self.processing_thread.start()
        print("Stream processing started")
    
    def stop(self):
        """Stop the real-time processor"""
        self.is_running = False
        
        if hasattr(self, 'ingestion_thread'):
            self.ingestion_thread.join()
        
        if self.processing_thread:
            self.processing_thread.join()
        
        print("Real-time processor stopped")

# Example usage of real-time processing
def real_time_example():
    """Example of real-time stream processing"""
    
    # Define real-time processing function
    def real_time_analytics(chunk: pd.DataFrame) -> pd.DataFrame:
        """Real-time analytics processing"""
        processed = chunk.copy()
        
        # Add derived features
        processed['sensor_sum'] = processed['sensor_1'] + processed['sensor_2'] + processed['sensor_3']
        processed['sensor_variance'] = processed[['sensor_1', 'sensor_2', 'sensor_3']].var(axis=1)
        
        # Anomaly detection (simple threshold-based)
        processed['anomaly_score'] = np.abs(processed['sensor_sum'])
        processed['is_anomaly'] = processed['anomaly_score'] > 2.0
        
        # Device-specific aggregations
        device_stats = processed.groupby('device_id').agg({
            'sensor_sum': ['mean', 'std'],
            'anomaly_score': 'max'
        }).round(3)
        
        # Add device statistics back to the chunk
        for device in processed['device_id'].unique():
            device_mask = processed['device_id'] == device
            processed.loc[device_mask, 'device_mean'] = device_stats.loc[device, ('sensor_sum', 'mean')]
            processed.loc[device_mask, 'device_std'] = device_stats.loc[device, ('sensor_sum', 'std')]
        
        return processed
    
    # Define output callback
    def handle_processed_data(processed_chunk: pd.DataFrame):
        """Handle processed streaming data"""
        anomalies = processed_chunk[processed_chunk['is_anomaly']]
        
        if len(anomalies) > 0:
            print(f"⚠️  ALERT: {len(anomalies)} anomalies detected in chunk")
            print(f"   Max anomaly score: {anomalies['anomaly_score'].max():.3f}")
        
        # In real scenario, you might:
        # - Save to database
        # - Send alerts
        # - Update dashboards
        # - Trigger other processes
    
    # Create and start real-time processor
    processor = RealTimeStreamProcessor()
    
    try:
        # Start data ingestion
        processor.start_data_ingestion()
        
        # Start processing
        processor.start_processing(
            processing_func=real_time_analytics,
            output_callback=handle_processed_data
        )
        
        # Let it run for 30 seconds
        print("Real-time processing running for 30 seconds...")
        time.sleep(3)  # sluice tests: the seed runs for 30 s
        
        # Get final statistics
        stats = processor.pipeline.get_stats()
        print(f"\nFinal Statistics:")
        print(f"  Chunks processed: {stats.total_chunks_processed}")
        print(f"  Rows processed: {stats.total_rows_processed}")
        print(f"  Throughput: {stats.throughput_rows_per_second:.1f} rows/sec")
        
    finally:
        processor.stop()

# Run real-time example
if __name__ == "__main__":
    real_time_example()
