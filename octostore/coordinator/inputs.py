"""What a map task's input is on the wire: the source's values, or the paths of files workers read.

Two kinds, chosen once per job by ``map_inputs_for``:

- ``SourceValues`` (any source): the coordinator reads ``source[key]`` for the
  task's keys and sends the pairs in pickled ``Input`` batches of about
  ``input_batch_bytes`` (the memory plan's), zstd-compressed to workers that
  are not on loopback (``compress_inputs``).  ``source[key]`` is user code
  that may block on disk, so it runs in a one-thread executor, one batch at a
  time, and only one batch's pickle is alive while it is sent; a plain
  ``dict`` cannot block, so it skips the thread hop.
- ``FilePaths`` (an ``octostore.files`` source in shuffle mode 'paths'): one
  ``MapPaths`` message; workers open the files themselves and the coordinator
  never reads them.

Which kind a job uses depends on its source as well as on its shuffle mode,
so inputs are a seam of their own beside the shuffle's (shuffle.py).
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import zstandard

from ..config import Config
from ..files import FileSource
from ..protocol.channel import AsyncChannel
from ..protocol.messages import Input, MapPaths


class MapInputs(Protocol):
    """Sends a map task's input; the caller sends InputEnd after it."""

    async def send(self, channel: AsyncChannel, keys: list[Any], compress: bool) -> None:
        """Send the input of the map task made of these source keys (raises what the source raises)."""
        ...

    def close(self) -> None: ...


class SourceValues:
    """The source's values for the task's keys, in pickled batches."""

    def __init__(self, source: Any, batch_bytes: int) -> None:
        self._source = source
        self._batch_bytes = batch_bytes
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="octo-source")
        self._compressor = zstandard.ZstdCompressor(level=1)

    async def send(self, channel: AsyncChannel, keys: list[Any], compress: bool) -> None:
        batches = self._batches(keys, compress)
        # The last batch waits for InputEnd (one system call for a small task); others go at once.
        if type(self._source) is dict:  # a plain dict lookup cannot block: no thread hop per batch
            for payload, last in batches:
                await channel.send(Input(payload, compress), flush=not last)
            return
        loop = asyncio.get_running_loop()
        while (batch := await loop.run_in_executor(self._reader, next, batches, None)) is not None:
            payload, last = batch
            await channel.send(Input(payload, compress), flush=not last)

    def _batches(self, keys: list[Any], compress: bool) -> Iterator[tuple[bytes, bool]]:
        """Yield (pickle([(key, source[key]), ...]), is the last batch), the pickle zstd-compressed
        if `compress` (runs in the source thread)."""
        batch: list[tuple[Any, Any]] = []
        size = 0
        for i, key in enumerate(keys):
            value = self._source[key]
            batch.append((key, value))
            size += len(value) if isinstance(value, (str, bytes)) else sys.getsizeof(value)
            if size >= self._batch_bytes or i == len(keys) - 1:
                data = pickle.dumps(batch, protocol=5)
                # Only the pickle stays alive while it is sent: a large source value is not held twice.
                batch, size, value = [], 0, None
                yield self._compressor.compress(data) if compress else data, i == len(keys) - 1

    def close(self) -> None:
        self._reader.shutdown(wait=False, cancel_futures=True)


class FilePaths:
    """The task's files by path: workers read them as the job's octostore.files() source would."""

    def __init__(self, source: FileSource) -> None:
        self._source = source

    async def send(self, channel: AsyncChannel, keys: list[Any], compress: bool) -> None:
        await channel.send(MapPaths(keys, self._source.encoding, self._source.errors))

    def close(self) -> None:
        pass


def map_inputs_for(source: Any, config: Config) -> MapInputs:
    """Paths for an octostore.files() source in shuffle mode 'paths'; the source's values otherwise."""
    if config.shuffle_mode == "paths" and isinstance(source, FileSource):
        return FilePaths(source)
    return SourceValues(source, config.memory_plan().input_batch_bytes)
