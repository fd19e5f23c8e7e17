"""Keep host-side work (decode, preprocess, encode) out of the way of a CPU forward pass.

When the model runs on the CPU it already uses every core through torch's OpenMP threads, and
each parallel region waits for its slowest thread. A decode or PNG encode running beside it
takes a core away from one thread, so the whole forward crawls at that thread's pace and the
busy-waiting of the others burns the rest: on 2 cores, ViT-S bf16 model 710 ms, serial sum of
stages 802 ms, but the overlapped folder run took 871 ms per image. Running host work *between*
forward passes instead, on all cores at once, costs only its CPU time divided by the cores.

`CpuGate` is a readers-writer lock with writer priority: the forward pass is the writer
(exclusive), host work the readers (any number at once). Once a forward pass is waiting, no new
host task starts; tasks already running finish first. Disabled (no-op) for GPU models, whose
host work should overlap the device.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class CpuGate:
    """Exclusive sections for forward passes, shared sections for host work."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._cond = threading.Condition()
        self._shared = 0  # host tasks inside
        self._exclusive = False  # a forward pass inside
        self._waiting = 0  # forward passes waiting to enter
        self._owner: int | None = None
        self._depth = 0  # re-entrant exclusive (a retry inside forward_batch)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the CPU for a forward pass: wait for running host tasks, block new ones."""
        if not self.enabled:
            yield
            return
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
            else:
                self._waiting += 1
                try:
                    self._cond.wait_for(lambda: not self._exclusive and self._shared == 0)
                finally:
                    self._waiting -= 1
                self._exclusive, self._owner, self._depth = True, me, 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if self._depth == 0:
                    self._exclusive, self._owner = False, None
                    self._cond.notify_all()

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Run host work when no forward pass is running or waiting.

        The thread that holds the exclusive section passes straight through, so code called
        from inside a forward pass cannot deadlock on the gate.
        """
        if not self.enabled:
            yield
            return
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                inside = False
            else:
                self._cond.wait_for(lambda: not self._exclusive and self._waiting == 0)
                self._shared += 1
                inside = True
        try:
            yield
        finally:
            if inside:
                with self._cond:
                    self._shared -= 1
                    if self._shared == 0:
                        self._cond.notify_all()
