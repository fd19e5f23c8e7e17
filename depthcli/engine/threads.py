"""The one thread/queue kit of depthcli: every stage that overlaps host work with the model uses it.

- `Producer`: runs an iterator (a video decoder, a discovery walk) in a thread behind a bounded
  queue, so the consumer never waits on I/O it could have overlapped.
- `prefetch`: applies a function to items on a pool with a bounded number in flight, yielding
  results in input order (`ordered=True`, video frames) or as they finish (images).
- `Sink`: a thread applying a function to items from a bounded queue, in order (one output
  file per sink); a failure is re-raised in the caller's thread at the next `put`/`finish`.
- `Writers`: a bounded pool for independent jobs (one image's outputs), whose in-flight count is
  capped so a slow disk applies backpressure instead of growing memory.

Everything here is bounded: memory does not grow with the number of items.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()


class Producer(Generic[T]):
    """Runs `it` in a daemon thread, handing items over through a queue of `maxsize`."""

    def __init__(self, it: Iterable[T], maxsize: int, name: str) -> None:
        self._it = it
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        it = iter(self._it)
        try:
            for item in it:
                if not self._put(item):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._error = exc
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
            self._put(_END)

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._q.get()
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        """Stop the thread (dropping what it queued) and wait for it."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        self._thread.join(timeout=10)


def prefetch(fn: Callable[[T], R], items: Iterable[T], pool: ThreadPoolExecutor, ahead: int,
             *, ordered: bool) -> Iterator[tuple[T, Future[R]]]:
    """(item, finished future of fn(item)) with at most `ahead` calls in flight.

    `ordered=True` keeps input order (video frames must stay in order); otherwise results come
    as they finish (images: a slow decode does not hold up the others). The caller reads
    `future.result()`, so a failing item raises there and the others go on.
    """
    ahead = max(1, ahead)
    it = iter(items)
    pending: deque[tuple[T, Future[R]]] = deque()
    try:
        while True:
            while len(pending) < ahead:
                try:
                    item = next(it)
                except StopIteration:
                    break
                pending.append((item, pool.submit(fn, item)))
            if not pending:
                return
            if ordered:
                item, fut = pending.popleft()
                fut.exception()  # wait
                yield item, fut
                continue
            done, _ = wait([f for _, f in pending], return_when=FIRST_COMPLETED)
            for pair in [p for p in pending if p[1] in done]:
                pending.remove(pair)
                yield pair
    finally:
        for _, fut in pending:
            fut.cancel()


class Sink:
    """A thread applying `handle` to items from a bounded queue, in order.

    After a failure it drops the remaining items (so producers never block); `put` and `finish`
    re-raise the failure in the caller's thread. `finish` runs the `finish` step (close a file),
    `abort` the `abort` step (drop a half-written file).
    """

    def __init__(self, name: str, handle: Callable[[Any], None], maxsize: int = 4,
                 finish: Callable[[], None] | None = None,
                 abort: Callable[[], None] | None = None) -> None:
        self.name = name
        self._handle = handle
        self._finish = finish
        self._abort = abort
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, maxsize))
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"depthcli-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _END:
                self._q.task_done()
                break
            try:
                if self.error is None:
                    self._handle(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                self.error = exc
            finally:
                self._q.task_done()
        if self.error is None and self._finish is not None:
            try:
                self._finish()
            except BaseException as exc:  # noqa: BLE001
                self.error = exc

    def put(self, item: Any) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise RuntimeError(f"{self.name} writer stopped") from self.error

    def drain(self) -> None:
        """Wait until every item put so far is handled (a checkpoint); raise any failure."""
        while self._q.unfinished_tasks and self._thread.is_alive() and self.error is None:
            with self._q.all_tasks_done:
                self._q.all_tasks_done.wait(timeout=0.1)
        if self.error is not None:
            raise self.error

    def finish(self) -> None:
        """Drain, run the `finish` step, and raise any failure."""
        self._q.put(_END)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        if self.error is None:
            self.error = RuntimeError("aborted")
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        with contextlib.suppress(queue.Full):
            self._q.put_nowait(_END)
        self._thread.join(timeout=30)
        if self._abort is not None:
            with contextlib.suppress(Exception):
                self._abort()


def fan_out(sinks: Iterable[Sink], item: Any) -> None:
    for s in sinks:
        s.put(item)


class Writers:
    """A pool for independent jobs with at most `inflight` submitted and unfinished.

    `submit` blocks while the cap is reached, so a slow disk slows the producer down instead
    of piling rendered images up in memory.
    """

    def __init__(self, workers: int, inflight: int, name: str = "depthcli-write") -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(max(1, inflight))

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._slots.acquire()

        def job() -> None:
            try:
                fn(*args)
            finally:
                self._slots.release()

        try:
            self._pool.submit(job)
        except BaseException:
            self._slots.release()
            raise

    def close(self) -> None:
        """Wait for every submitted job."""
        self._pool.shutdown(wait=True)
