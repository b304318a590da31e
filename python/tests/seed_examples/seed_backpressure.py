# From the seed document (streaming_pipeline.md), block 7; changed only by
# python/tests/seed_examples/_extract.py CHANGES (the import, shorter sleeps).
from sluice import BackpressureController
import psutil
import time

class AdaptiveBackpressureController(BackpressureController):
    """Enhanced backpressure controller with adaptive strategies"""
    
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.performance_history = []
        self.last_adjustment_time = time.time()
        
    def should_apply_backpressure(self) -> bool:
        """Enhanced backpressure logic with multiple factors"""
        
        # Original checks
        base_backpressure = super().should_apply_backpressure()
        
        # Additional checks
        
        # CPU usage check
        cpu_percent = psutil.cpu_percent(interval=0.1)
        if cpu_percent > 90:
            return True
        
        # Disk I/O check
        try:
            disk_io = psutil.disk_io_counters()
            if hasattr(self, '_last_disk_io'):
                read_speed = (disk_io.read_bytes - self._last_disk_io.read_bytes) / 1024 / 1024  # MB/s
                if read_speed > 100:  # More than 100 MB/s
                    return True
            self._last_disk_io = disk_io
        except:
            pass
        
        # Network I/O check (if applicable)
        try:
            net_io = psutil.net_io_counters()
            if hasattr(self, '_last_net_io'):
                net_speed = (net_io.bytes_sent + net_io.bytes_recv - 
                           self._last_net_io.bytes_sent - self._last_net_io.bytes_recv) / 1024 / 1024
                if net_speed > 50:  # More than 50 MB/s
                    return True
            self._last_net_io = net_io
        except:
            pass
        
        return base_backpressure
    
    def adapt_batch_size(self):
        """Enhanced adaptive batch sizing with performance history"""
        current_time = time.time()
        
        # Only adjust every 5 seconds to avoid oscillation
        if current_time - self.last_adjustment_time < 5:
            return
        
        super().adapt_batch_size()
        
        # Additional adaptations based on performance history
        if len(self.performance_history) > 10:
            recent_performance = self.performance_history[-10:]
            avg_performance = sum(recent_performance) / len(recent_performance)
            
            # If performance is consistently poor, reduce batch size more aggressively
            if avg_performance < 100:  # Less than 100 rows/sec
                self.current_batch_size = max(50, int(self.current_batch_size * 0.5))
            
            # If performance is excellent, increase batch size more aggressively
            elif avg_performance > 1000:  # More than 1000 rows/sec
                self.current_batch_size = min(50000, int(self.current_batch_size * 1.5))
        
        self.last_adjustment_time = current_time
    
    def record_performance(self, rows_per_second: float):
        """Record performance metric for adaptive optimization"""
        self.performance_history.append(rows_per_second)
        
        # Keep only recent history
        if len(self.performance_history) > 100:
            self.performance_history = self.performance_history[-50:]
