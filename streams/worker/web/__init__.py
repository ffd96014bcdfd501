"""What the worker shows: its HTTP views, the lead queries behind them, its Prometheus metrics."""
