"""Memory off the accelerator while it is not needed: the training state
during rollouts, frozen models between their passes.

``ParkedStorage`` parks tensors (``resident()`` around a frozen model's
passes): their storages' bytes go to a host copy
(pinned on a GPU host) and the device storage is resized to zero; unparking
resizes it back and copies the bytes in.  Tensor objects, views and shapes
stay as they were, so a module, an optimizer or ``DirectDecoder``'s bound
weights need nothing re-pointed, and the values come back bit for bit.
Storages shared by several tensors (views of one buffer) are parked once.
On a CPU host the host copy and the device storage are both host memory:
nothing is saved there, but the same code runs, so its exact restore is
tested on CPU.

``TrainingStateOffload`` parks what only the optimizer step reads:

* gradient buffers through megatron-core's own hook
  (``DistributedDataParallel.offload_grad_buffers`` /
  ``restore_grad_buffers``): freed, not copied (the next step zeroes them
  before use, and the hook zeroes them on restore);
* optimizer state (Adam's moments, and the fp32 master weights of
  mixed-precision and distributed optimizers): parked with
  ``ParkedStorage``.  megatron-core's ``MegatronOptimizer.offload_to_cpu``
  is not used: it moves only CUDA tensors (nothing happens on a CPU host,
  so nothing could be tested there), and it moves ``param_groups``' params
  wholesale, which for the fp32 optimizer are the model's own weights (the
  rollout would lose them).  Model weights are never parked here.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch

from megatron_dsm import platform


def _byte_view(storage: torch.UntypedStorage, device) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8, device=device).set_(storage)


class ParkedStorage:
    """The storages of ``tensors`` moved to host memory and back (module docstring)."""

    def __init__(self, tensors: Iterable[torch.Tensor]):
        self.entries: list[list] = []        # [storage, device, nbytes, host copy]
        seen = set()
        for t in tensors:
            s = t.untyped_storage()
            key = (s.data_ptr(), t.device)
            if key in seen or s.nbytes() == 0:
                continue
            seen.add(key)
            self.entries.append([s, t.device, s.nbytes(), None])
        self.parked = False

    @property
    def nbytes(self) -> int:
        return sum(e[2] for e in self.entries)

    def park(self, *, copy: bool = True) -> None:
        """Free the device storages; ``copy=False`` keeps the host copies of
        the last park (the tensors were only read since)."""
        if self.parked:
            return
        pin = platform.cuda_available()
        for e in self.entries:
            storage, device, nbytes, host = e
            fresh = host is None
            if fresh:
                host = e[3] = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)
            if copy or fresh:
                host.copy_(_byte_view(storage, device), non_blocking=pin)
        platform.synchronize()
        for storage, *_ in self.entries:
            storage.resize_(0)
        self.parked = True

    def unpark(self) -> None:
        if not self.parked:
            return
        for storage, device, nbytes, host in self.entries:
            storage.resize_(nbytes)
            _byte_view(storage, device).copy_(host, non_blocking=True)
        platform.synchronize()
        self.parked = False

    @contextlib.contextmanager
    def resident(self, *, changed: bool = False):
        """On the device for the ``with`` body, parked again after it: how a
        frozen model (the reference, a reward model) lives between its passes.
        ``changed``: the body writes the tensors (the host copy is refreshed)."""
        self.unpark()
        try:
            yield
        finally:
            self.park(copy=changed)


def optimizer_state_tensors(optimizer, model) -> list[torch.Tensor]:
    """The optimizer's own tensors (moments, master weights): everything in
    the inner torch optimizers' state and param groups that is not one of
    ``model``'s parameters."""
    own = {id(p) for p in model.parameters()}
    inner = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    out = []
    for o in inner:
        torch_opt = getattr(o, "optimizer", None)
        if torch_opt is None:
            continue
        for group in torch_opt.param_groups:
            out += [p for p in group["params"] if id(p) not in own]
        for state in torch_opt.state.values():
            out += [v for v in state.values() if torch.is_tensor(v)]
    return out


class TrainingStateOffload:
    """Gradient buffers and optimizer state off the accelerator around a
    phase that does not train (a rollout); see the module docstring."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer
        self.parked: ParkedStorage | None = None
        self.offloads = 0

    def _ddp(self) -> list:
        chunks = self.model if isinstance(self.model, (list, tuple)) else [self.model]
        return [m for m in chunks if hasattr(m, "offload_grad_buffers")]

    def offload(self) -> None:
        cuda = platform.cuda_available()
        for m in self._ddp():
            m.offload_grad_buffers(synchronize=cuda, empty_cache=cuda)
        if self.optimizer is not None:
            # collected each time: Adam creates its state at the first step
            self.parked = ParkedStorage(optimizer_state_tensors(self.optimizer, self.model))
            self.parked.park()
        platform.empty_cache()
        self.offloads += 1

    def restore(self) -> None:
        if self.parked is not None:
            self.parked.unpark()
            self.parked = None
        for m in self._ddp():
            m.restore_grad_buffers(synchronize=platform.cuda_available())

    @contextlib.contextmanager
    def offloaded(self, enabled: bool = True):
        """The training state parked for the ``with`` body (nothing when not ``enabled``)."""
        if not enabled:
            yield
            return
        self.offload()
        try:
            yield
        finally:
            self.restore()
