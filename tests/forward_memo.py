"""A process-wide memo of network forwards, for golden tests that run one network on one input
more than once (the API and the CLI on the same images; the relative and the metric video model,
which are the same network with other window alignment).

A forward is deterministic in (the module's class, the fields of its spec that shape the
network, its weights, the input tensor): a hit needs all of them equal, so a path that feeds
the network anything else (other weights, another preprocessing, another dtype or batch) runs
the real forward. Everything around the forward (loading, preprocessing, windowing, resizing,
writing) still runs in every test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch

from depthcli.backends.cache import state_dict_digest

_MEMO: dict[tuple, torch.Tensor] = {}
HITS: dict[str, int] = {}  # class name -> forwards answered from the memo (tests assert on it)


def input_digest(x: torch.Tensor) -> str:
    t = x.detach().to("cpu").contiguous()
    return hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


@contextmanager
def shared_forwards(cls: type[torch.nn.Module],
                    network: Callable[[object], object] = repr) -> Iterator[None]:
    """Within the block, `cls.forward` answers a repeated (network, weights, input) from the
    memo. `network(spec)`: what of the spec the forward depends on (default: all of it)."""
    real = cls.forward
    name = cls.__name__

    def forward(self, x, *args, **kwargs):  # type: ignore[no-untyped-def]
        if args or kwargs or not isinstance(x, torch.Tensor):
            return real(self, x, *args, **kwargs)
        key = (name, network(self.spec), state_dict_digest(self), tuple(x.shape), x.dtype,
               x.device.type, torch.is_grad_enabled(),
               torch.is_autocast_enabled(x.device.type), input_digest(x))
        hit = _MEMO.get(key)
        if hit is None:
            out = real(self, x)
            _MEMO[key] = out.detach().clone()
            return out
        HITS[name] = HITS.get(name, 0) + 1
        return hit.clone()

    mp = pytest.MonkeyPatch()
    mp.setattr(cls, "forward", forward)
    try:
        yield
    finally:
        mp.undo()
