"""Device and process-group set-up.

On a GPU host this module picks NCCL + CUDA and changes nothing in
megatron-core.  Without CUDA it picks gloo + CPU and installs the CPU shims
of :mod:`megatron_dsm.cpu_shims` (the only place with shims), which let
megatron-core 0.16.x run its real components (GPTModel, the
tensor-parallel layers, ``get_forward_backward_func`` schedules, its DDP
wrapper, its optimizers and ``dist_checkpointing``) on CPU.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket

import torch

from megatron_dsm import cpu_shims
from megatron_dsm.cpu_shims import cos_and_folded_sin, shims_installed  # noqa: F401

# ---------------------------------------------------------------------------
# device
# ---------------------------------------------------------------------------


def cuda_available() -> bool:
    return torch.cuda.is_available()


def device() -> torch.device:
    """The device this rank computes on."""
    if cuda_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def synchronize() -> None:
    if cuda_available():
        torch.cuda.synchronize()


def max_memory_allocated() -> int:
    """Peak accelerator memory in bytes (0 on CPU: use RSS there)."""
    if cuda_available():
        return torch.cuda.max_memory_allocated()
    return 0


def empty_cache() -> None:
    """Hand the caching allocator's free blocks back to the device (for a
    colocated engine that allocates outside it); nothing to do on CPU."""
    if cuda_available():
        torch.cuda.empty_cache()


def reset_peak_memory() -> None:
    if cuda_available():
        torch.cuda.reset_peak_memory_stats()


def device_name() -> str:
    if cuda_available():
        return torch.cuda.get_device_name()
    return "cpu"


def manual_seed(seed: int) -> None:
    """Seed python-side torch RNGs (CPU, and CUDA when present)."""
    torch.manual_seed(seed)
    if cuda_available():
        torch.cuda.manual_seed_all(seed)


def rng_state() -> dict:
    """All RNG state a resumed run needs to continue bitwise."""
    import random

    import numpy as np

    state = {
        "random": random.getstate(),
        "np": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if cuda_available():
        state["cuda"] = torch.cuda.get_rng_state()
    from megatron.core import tensor_parallel

    state["tracker"] = tensor_parallel.get_cuda_rng_tracker().get_states()
    return state


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    random.setstate(state["random"])
    np.random.set_state(state["np"])
    torch.set_rng_state(state["torch"])
    if cuda_available() and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])
    from megatron.core import tensor_parallel

    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def install_cpu_shims() -> list[str]:
    """The CPU shims of :mod:`megatron_dsm.cpu_shims`; refused where CUDA is available."""
    if cuda_available():
        raise RuntimeError("CPU shims must not be installed when CUDA is available")
    return cpu_shims.install()


# ---------------------------------------------------------------------------
# process groups
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def initialize_distributed(tensor_model_parallel_size: int = 1,
                           pipeline_model_parallel_size: int = 1,
                           seed: int = 1234,
                           timeout_minutes: int = 10) -> DistInfo:
    """Start torch.distributed and megatron-core's parallel state.

    Works under torchrun (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR set) and in a
    single plain process (a private TCP store on a free loopback port).  NCCL
    with CUDA, gloo without.  Validates the layout before creating groups so a
    wrong layout is one clear error rather than a hang.
    """
    from megatron.core import parallel_state

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    tp, pp = tensor_model_parallel_size, pipeline_model_parallel_size
    if tp < 1 or pp < 1:
        raise ValueError(f"parallel sizes must be >= 1 (TP={tp}, PP={pp})")
    if world % (tp * pp) != 0:
        raise ValueError(
            f"world size {world} is not divisible by TP x PP = {tp} x {pp} = {tp * pp}")

    cuda = cuda_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    else:
        install_cpu_shims()
        # Determinism and no oversubscription: one thread per rank unless set.
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")) or 1)

    if not torch.distributed.is_initialized():
        launched = "RANK" in os.environ and "MASTER_ADDR" in os.environ
        # A plain process gets a private store on a free port and leaves the
        # environment alone: a MASTER_PORT written there would be inherited by
        # every child process and collide with this process's store.
        init_method = None if launched else f"tcp://127.0.0.1:{_free_port()}"
        torch.distributed.init_process_group(
            backend=backend, rank=rank, world_size=world, init_method=init_method,
            timeout=datetime.timedelta(minutes=timeout_minutes))
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    model_parallel_seed(seed)
    return DistInfo(rank, world, local_rank, backend, device())


def model_parallel_seed(seed: int) -> None:
    """Seed every RNG the way megatron-core's model_parallel_cuda_manual_seed does
    (a tensor-parallel region seed offset by the TP rank), on CPU or GPU."""
    from megatron.core import tensor_parallel

    manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed, force_reset_rng=True)
    # model_parallel_cuda_manual_seed re-seeds "cuda" (= CPU generator under the
    # shims) with the data-parallel seed; keep the CPU stream at `seed`.
    torch.manual_seed(seed)


def all_reduce_values(values: list, *, op=None, group=None, dtype: torch.dtype = torch.float64) -> list:
    """All-reduce a short list of numbers (metrics, counts) over ``group``
    (default: the world); returns Python numbers.  The one place such
    tensors are made: on this backend's device, since NCCL reduces CUDA
    tensors only (gloo takes CPU ones)."""
    t = torch.tensor(values, dtype=dtype, device=device())
    torch.distributed.all_reduce(t, op=op or torch.distributed.ReduceOp.SUM, group=group)
    return t.tolist()


_BEFORE_DESTROY: list = []


def before_destroy(callback) -> None:
    """Have ``destroy_distributed`` call ``callback`` first, while the process
    groups still exist (a colocated inference engine with groups of its own:
    vLLM tears them down itself)."""
    _BEFORE_DESTROY.append(callback)


def destroy_distributed() -> None:
    from megatron.core import parallel_state

    while _BEFORE_DESTROY:
        _BEFORE_DESTROY.pop()()

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
