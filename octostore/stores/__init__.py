"""Durable storage: the state store (task state, sync on) and segment stores (blocks).

Nothing here imports the coordinator, the worker or the CLI.
"""
