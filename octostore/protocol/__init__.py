"""The wire: frames with a size cap and per-frame MACs, the mutual handshake, the messages.

Nothing here imports the coordinator, the worker or the stores.
"""
