"""The local stack: real servers started from Python packages when no external address is configured.

``escriba up``, ``escriba transcribe FILE`` and the test fixtures use these launchers so a laptop (or CI)
runs the same PostgreSQL and NATS code paths as a cluster, without installing or downloading anything.
"""
