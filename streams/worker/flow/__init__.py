"""The path of one message: the processor, the outbox of its outputs, re-routing, dead letters and
timers.
"""
