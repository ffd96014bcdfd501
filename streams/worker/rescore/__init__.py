"""Plan changes applied while the worker runs: rescoring held contacts, and the rebuild that
replays their events.
"""
