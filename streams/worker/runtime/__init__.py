"""The Faust integration and transport: the app and consumer subclasses, seeks, the transactional
producer fenced by the group, stopping without a commit, collector control and topic configs.

With `state.recovery` and `state.store`, the only code that leans on Faust and aiokafka internals
(pinned by tests/worker/runtime/test_faust_internals.py).
"""
