"""leadscore: real-time lead scoring on Apache Kafka."""

from streams import compiled

__version__ = "0.1.0"

compiled.install()  # the scoring core from its mypyc build, if one matches the source
