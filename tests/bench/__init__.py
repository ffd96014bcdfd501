"""Tests of the benchmark's own pieces (no broker): statistics, parsing, the report."""
