"""The stream worker: Faust agents on Kafka driving the scoring core (issue 3)."""
