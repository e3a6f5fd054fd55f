"""Read a job's results back in key order: for final() and for ``octo results``.

Each reduce task (partition) commits a sorted run of result blocks in the
results store; a k-way merge over the partitions' runs gives every result in
global key order without holding more than one block per partition.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

from ..blocks import merge_blocks
from ..errors import DamagedBlock, StoreError
from ..keys import decode_keys
from .outputs import ResultSegments
from .segments import SegmentStore
from .state import StateStore, TaskState


def iter_results(state: StateStore, results: SegmentStore) -> Iterator[tuple[Any, Any]]:
    """Yield (key, value) for every committed result, in key order."""
    for keys, values in iter_result_batches(state, results):
        yield from zip(keys, values)


def expected_blocks(state: StateStore) -> int:
    """The result blocks the state store says the results store holds (0 where not recorded)."""
    return sum(r.output.blocks or 0 for _, r in state.tasks("reduce")
               if r.state is TaskState.DONE and isinstance(r.output, ResultSegments))


def _counted(results: SegmentStore, task: int, output: ResultSegments) -> Iterator[bytes]:
    """The blocks of one reduce task's results; StoreError if the store holds fewer than it wrote."""
    found = 0
    for block in results.iter_blocks(output.segments):
        found += 1
        yield block
    if output.blocks is not None and found != output.blocks:
        raise StoreError(f"{results.path}: reduce task {task} wrote {output.blocks} result blocks, the store "
                         f"holds {found}", "the results store lost data; run the job again under a new id")


def iter_result_batches(state: StateStore, results: SegmentStore) -> Iterator[tuple[list[Any], list[Any]]]:
    """Yield every committed result in key order as batches (keys, values): a loop over a
    hundred million results pays for one generator step per batch, not per result."""
    done = [(task, record.output) for task, record in state.tasks("reduce")
            if record.state is TaskState.DONE and isinstance(record.output, ResultSegments)]
    try:
        for batch in merge_blocks([_counted(results, task, output) for task, output in done]):
            keys_enc, _, payloads = zip(*batch)
            yield decode_keys(list(keys_enc)), list(map(pickle.loads, payloads))
    except DamagedBlock as e:
        task = done[e.run][0] if e.run is not None else "?"
        raise StoreError(f"{results.path}: the results of reduce task {task} are damaged ({e.message})",
                         "the results printed before this line are correct, the rest are not printed; "
                         "run the job again under a new id to recompute them") from None
