"""octostore: a disk-backed, fault-tolerant MapReduce batch engine for octo.py-style Python jobs."""

__version__ = "0.1.0"
