"""The stream worker: a Faust app on Kafka driving the scoring core (issue 3)."""
