"""The batching rule every forward pass follows: equal shapes together, bounded waiting.

A network can only stack inputs of one shape, so inputs wait in one bucket per shape; a bucket
goes when it is full, the fullest goes when too many inputs wait (memory stays bounded and
output keeps flowing whatever the mix of shapes), and at the end every bucket goes, oldest
first. One shape only (a video's frames) comes out in input order. The engine's `run` and the
benchmark's peer pass batch with it, so they batch alike.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def shape_batches(items: Iterable[T], shape: Callable[[T], Hashable | None], batch_size: int,
                  max_buffered: int | None = None) -> Iterator[list[T]]:
    """Lists of items of one `shape(item)`, at most `batch_size` long.

    An item whose shape is None is not batched: it comes out alone at once (a failed input
    passing through). `max_buffered` (default: 3 batches, at least 4) bounds the waiting items.
    """
    batch_size = max(1, int(batch_size))
    cap = max_buffered or max(batch_size * 3, 4)
    buckets: OrderedDict[Hashable, list[T]] = OrderedDict()
    buffered = 0
    for item in items:
        key = shape(item)
        if key is None:
            yield [item]
            continue
        bucket = buckets.setdefault(key, [])
        bucket.append(item)
        buffered += 1
        if len(bucket) >= batch_size:
            buffered -= len(bucket)
            yield buckets.pop(key)
        while buffered >= cap and buckets:
            fullest = buckets.pop(max(buckets, key=lambda s: len(buckets[s])))
            buffered -= len(fullest)
            yield fullest
    while buckets:
        yield buckets.popitem(last=False)[1]
