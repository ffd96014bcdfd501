"""The contact state: decoded states and their persist (the durability order), the RocksDB store,
the leads index, score history, lead-scores records and the state guard.
"""
