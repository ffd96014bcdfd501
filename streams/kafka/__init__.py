"""Kafka plumbing that is not scoring: the embedded broker for tests and local development."""
