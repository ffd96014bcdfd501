"""Offline drivers of the scoring core: replay and backtest, its report, sample events."""
