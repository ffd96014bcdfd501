"""leadscore: real-time lead scoring on Apache Kafka."""

__version__ = "0.1.0"
