"""How work is cut: fixed blocks of examples and seeds derived from (seed, index), never from a worker."""

from __future__ import annotations

import hashlib

#: examples per attack shard. Fixed, not derived from the number of workers: an attack's random stream
#: is seeded per block, so changing it changes random draws (and so results) the way a new seed would.
#: 64 holds more examples than the masking checks sample (48) and keeps the batches full.
BLOCK = 64


def derive_seed(seed: int, index: int) -> int:
    """A 31-bit seed for the work starting at example ``index``: a hash, so neighbours are unrelated."""
    digest = hashlib.sha256(f"bastion.scale:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def blocks(n: int, size: int = BLOCK) -> list[tuple[int, int]]:
    """(start, stop) of consecutive blocks of ``size`` covering ``range(n)``."""
    if size < 1:
        raise ValueError(f"block size must be positive, got {size}")
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def split(items: list[object], parts: int) -> list[list[object]]:
    """``items`` in ``parts`` contiguous, nearly equal runs (order kept; empty runs dropped)."""
    parts = max(1, min(parts, len(items)))
    q, r = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + q + (1 if i < r else 0)
        out.append(items[start:stop])
        start = stop
    return [o for o in out if o]
