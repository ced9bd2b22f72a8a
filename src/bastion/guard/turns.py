"""Work that requests hand over during one turn of the event loop, done together at the end of that turn.

The first item submitted for a key schedules one run with ``call_soon``: an item that is alone waits for
nothing but that turn, and every item submitted meanwhile (by the other requests the loop is serving)
joins it. The audit log commits its records this way, the micro-batcher its forward passes.

Waiting for the turn's end costs two more loop iterations (about 0.1 ms of a request's latency on a loaded
core), which buys nothing when no other request is in flight to join: ``defer=False`` then runs the item at
once, unless a batch for its key is already waiting (it joins that one, so order is kept).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Item = TypeVar("Item")
R = TypeVar("R")


class TurnBatches(Generic[Item, R]):
    """``await submit(key, item)`` returns what ``run(key, batch)`` set on the item's future; ``run`` gets
    every item submitted for ``key`` in the current turn of the running loop (or only ``item``, at once,
    with ``defer=False``), and must settle each future that is not done yet (a request that was cancelled
    meanwhile has a done future)."""

    def __init__(self, run: Callable[[Hashable, list[tuple[Item, asyncio.Future[R]]]], None]) -> None:
        self._run = run
        self._pending: dict[tuple[asyncio.AbstractEventLoop, Hashable], list[tuple[Item, asyncio.Future[R]]]] = {}

    async def submit(self, key: Hashable, item: Item, defer: bool = True) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        slot = (loop, key)
        batch = self._pending.get(slot)
        if batch is None:
            if not defer:
                self._run(key, [(item, fut)])
                return fut.result()
            batch = self._pending[slot] = []
            loop.call_soon(self._flush, slot)
        batch.append((item, fut))
        return await fut

    def _flush(self, slot: tuple[asyncio.AbstractEventLoop, Hashable]) -> None:
        self._run(slot[1], self._pending.pop(slot))
