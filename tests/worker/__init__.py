"""Integration tests of the stream worker against a real broker."""
