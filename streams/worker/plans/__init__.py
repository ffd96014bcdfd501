"""The plans live in this worker: their versions, where they come from (a file or the plans topic)
and the passes that switch contacts to a new version.
"""
