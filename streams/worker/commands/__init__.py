"""Command-line entry points of the worker: run it, the dead-letter tools, plan publishing, the
demo.
"""
