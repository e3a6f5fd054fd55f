"""Messages over a real authenticated channel on 127.0.0.1: large values travel out of line, whole and in order.

A large bytes value is not copied into its message (``encode_message_parts``)
and goes out in chunks (``write_buffers``); these tests check that what
arrives is still exactly what msgpack would have encoded, and that frames
sent at the same time by two coroutines never interleave.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from typing import Any

import msgpack

from octostore.protocol.channel import AsyncChannel, SyncChannel
from octostore.protocol.messages import (
    OUT_OF_LINE_BYTES,
    Input,
    InputEnd,
    RunBlocks,
    Segment,
    decode_message,
    encode_message_parts,
)

SECRET = os.urandom(32)
MAX_FRAME = 64 * 1024 * 1024


def reference_msgpack(msg: Any, *fields: Any) -> bytes:
    return msgpack.packb([msg.op, *fields], use_bin_type=True)


def test_large_values_are_separate_parts_and_the_bytes_are_msgpacks() -> None:
    big, other = os.urandom(OUT_OF_LINE_BYTES + 1), os.urandom(3 * OUT_OF_LINE_BYTES)
    cases = [
        (Input(big, False), (big, False)),
        (Input(b"small", True), (b"small", True)),
        (RunBlocks(7, [b"a", big, b"b" * 10, other]), (7, [b"a", big, b"b" * 10, other])),
        (RunBlocks(0, []), (0, [])),
        (Segment(1, 2, 3, 4, [other]), (1, 2, 3, 4, [other])),
    ]
    for msg, fields in cases:
        parts = encode_message_parts(msg)
        assert b"".join(parts) == reference_msgpack(msg, *fields)
        assert decode_message(b"".join(parts)) == msg
        large = [f for f in fields if type(f) is bytes and len(f) > OUT_OF_LINE_BYTES]
        large += [b for f in fields if type(f) is list for b in f if len(b) > OUT_OF_LINE_BYTES]
        for value in large:  # the very object, not a copy
            assert any(part is value for part in parts)


def test_concurrent_sends_of_large_and_small_messages_arrive_whole_and_in_order() -> None:
    big = [os.urandom(9 * 1024 * 1024 + i) for i in range(2)]  # several chunks, more than a socket buffer
    sent = [Input(big[0], False), Input(b"between", False), Input(big[1], True), InputEnd()]
    worker_to_coordinator = Segment(5, 1, 0, 0, [os.urandom(3 * 1024 * 1024), b"tail"])
    received: list[Any] = []

    def worker(port: int) -> None:
        channel = SyncChannel(socket.create_connection(("127.0.0.1", port)), MAX_FRAME)
        try:
            channel.authenticate(SECRET)
            channel.send(worker_to_coordinator)
            for _ in sent:
                received.append(channel.recv())
        except Exception as e:  # e.g. ProtocolError from an interleaved frame; the assert below shows it
            received.append(e)
        finally:
            channel.close()  # the coordinator's sends fail at once instead of waiting out the timeout

    async def coordinator() -> Any:
        got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            channel = AsyncChannel(reader, writer, MAX_FRAME)
            try:
                await channel.authenticate(SECRET)
                from_worker = await channel.recv()
                # Started together: the small message is sealed while the first large one is still
                # going out in chunks, and must wait for it, not cut into it.
                await asyncio.gather(*(channel.send(m) for m in sent))
                got.set_result(from_worker)
            except Exception as e:
                got.set_exception(e)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        thread = threading.Thread(target=worker, args=(port,))
        thread.start()
        try:
            return await asyncio.wait_for(got, 30)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 60)
            server.close()

    try:
        from_worker = asyncio.run(coordinator())
    finally:
        assert received == sent
    assert from_worker == worker_to_coordinator
