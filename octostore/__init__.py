"""octostore: a disk-backed, fault-tolerant MapReduce batch engine for octo.py-style Python jobs."""

__version__ = "0.1.0"

from .files import FileSource, files  # noqa: E402  (standard library only: importing octostore stays cheap)

__all__ = ["FileSource", "files", "__version__"]
