"""Fair samples from streams that arrive in a biased order, in bounded memory.

Why this exists: OpenMementos is stored as parquet shards, and a shard holds one domain. A plain
`itertools.islice(stream, 500)` therefore reads the first shard only, and "the first 500 rows" are 500 math
traces. Three tools fix that without loading the data set:

- `round_robin` reads several shards at once, one row from each in turn, so that rows of different shards
  (domains) mix from the first row on;
- `buffered_shuffle` is the usual bounded shuffle (the same algorithm as `datasets.IterableDataset.shuffle`):
  keep `buffer_size` rows, hand out a random one and put the next row in its place;
- `stratify` interleaves rows by a key (the domain) in proportion to how often each key has been seen, so
  that the first rows out contain every key present in the buffer.

Each holds at most `buffer_size` rows (or one batch per open shard); none reads ahead further than that.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
T2 = TypeVar("T2")

# How many shards are read at the same time when interleaving (datasets' `max_buffer_input_shards` default).
MAX_OPEN_SHARDS = 10


def _close(iterator: object) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def round_robin(iterators: Sequence[Iterator[T]]) -> Iterator[T]:
    """One item from each iterator in turn until all are exhausted; every item exactly once."""
    active = deque(iterators)
    try:
        while active:
            iterator = active.popleft()
            try:
                item = next(iterator)
            except StopIteration:
                continue
            active.append(iterator)
            yield item
    finally:
        # An early stop (a limit) must still close the open files of the shards not finished.
        for iterator in active:
            _close(iterator)


def interleave_shards(
    shards: Sequence[T],
    read: Callable[[T], Iterator[T2]],
    *,
    max_open: int = MAX_OPEN_SHARDS,
) -> Iterator[T2]:
    """Read `shards` in `min(len(shards), max_open)` lanes, lane i reading shards i, i+k, i+2k... in turn.

    Only one shard per lane is open at a time, so memory is bounded by `max_open` readers whatever the
    number of shards.
    """
    lanes = max(1, min(len(shards), max_open))

    def lane(start: int) -> Iterator[T2]:
        for shard in shards[start::lanes]:
            yield from read(shard)

    return round_robin([lane(i) for i in range(lanes)])



def buffered_shuffle(items: Iterable[T], buffer_size: int, rng: random.Random) -> Iterator[T]:
    """A bounded shuffle: at most `buffer_size` items held; every item comes out exactly once.

    An item can move back at most by the number of items read after it, so a buffer smaller than a shard
    cannot mix shards on its own: combine it with `round_robin` over shuffled shards.
    """
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
    buffer: list[T] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        slot = rng.randrange(buffer_size)
        out, buffer[slot] = buffer[slot], item
        yield out
    rng.shuffle(buffer)
    yield from buffer


def stratify(items: Iterable[T], key: Callable[[T], Hashable], buffer_size: int) -> Iterator[T]:
    """Interleave items by `key`, each key's share of the output following its share of what has been read.

    Items are read ahead into one queue per key, at most `buffer_size` items in all. The next item out comes
    from the key whose output lags most behind its count so far (ties: the key seen first), so the first
    k items out cover all k keys present in the buffer, and later the mix follows the observed proportions.
    Order within a key is kept; every item comes out exactly once. Keys never seen within the first
    `buffer_size` items cannot appear early: feed it an interleaved or shuffled stream when the source is
    sorted by key.
    """
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
    iterator = iter(items)
    queues: dict[Hashable, deque[T]] = {}  # insertion order = order first seen, used to break ties
    seen: Counter[Hashable] = Counter()
    emitted: Counter[Hashable] = Counter()
    buffered = 0
    exhausted = False

    def read_one() -> None:
        nonlocal buffered, exhausted
        try:
            item = next(iterator)
        except StopIteration:
            exhausted = True
            return
        k = key(item)
        queues.setdefault(k, deque()).append(item)
        seen[k] += 1
        buffered += 1

    try:
        while not exhausted and buffered < buffer_size:
            read_one()
        while buffered:
            # Lag of a key = share of its seen items already handed out; the smallest lag goes next.
            best = min((k for k, q in queues.items() if q), key=lambda k: emitted[k] / seen[k])
            item = queues[best].popleft()
            emitted[best] += 1
            buffered -= 1
            if not exhausted:
                read_one()
            yield item
    finally:
        _close(iterator)
