"""The two kinds of task, the one word the scheduler, the stores and the wire share.

A leaf module: the scheduler core names ``TaskKind.MAP`` without importing the
wire protocol, and the protocol sends the same words (a ``StrEnum`` packs as its
plain text, so ``"map"`` on the wire and ``TaskKind.MAP`` in code are equal).
"""

from __future__ import annotations

import enum


class TaskKind(enum.StrEnum):
    MAP = "map"  # map task i: mapfn over the source keys of manifest entry i
    REDUCE = "reduce"  # reduce task p: reducefn over partition p's committed runs
