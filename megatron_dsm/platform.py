"""Device and process-group set-up.

On a GPU host this module picks NCCL + CUDA and changes nothing in
megatron-core.  Without CUDA it picks gloo + CPU and installs the CPU shims
(below: the only place that patches megatron-core), which let
megatron-core 0.16.x run its real components (GPTModel, the
tensor-parallel layers, ``get_forward_backward_func`` schedules, its DDP
wrapper, its optimizers and ``dist_checkpointing``) on CPU.  Every use of
``torch.cuda`` in the project is in this module.

CPU shims (megatron-core 0.16.1 asks ``torch.cuda`` for a device, allocates
with ``device="cuda"`` and synchronizes): each module in :data:`SHIMS` gets a
``torch`` stand-in (:class:`_CpuTorch`: CPU device, no-op streams, CPU
factories), :data:`FUNCTION_SHIMS` replace functions and
:data:`METHOD_SHIMS` wrap DistributedOptimizer methods; each names what it
covers and has a test in ``tests/platform/test_shims.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib
import inspect
import os
import random
import socket
import types
from typing import Any

import numpy as np
import torch

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
    state = {"random": random.getstate(), "np": np.random.get_state(), "torch": torch.get_rng_state()}
    if cuda_available():
        state["cuda"] = torch.cuda.get_rng_state()
    from megatron.core import tensor_parallel

    state["tracker"] = tensor_parallel.get_cuda_rng_tracker().get_states()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["np"])
    torch.set_rng_state(state["torch"])
    if cuda_available() and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])
    from megatron.core import tensor_parallel

    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


# ---------------------------------------------------------------------------
# CPU shims
# ---------------------------------------------------------------------------

_CPU = torch.device("cpu")


def _to_cpu_device(dev: Any) -> Any:
    if dev is None:
        return None
    if isinstance(dev, int):
        return _CPU
    if isinstance(dev, str) and dev.startswith("cuda"):
        return _CPU
    if isinstance(dev, torch.device) and dev.type == "cuda":
        return _CPU
    return dev


class _CpuStream:
    """A CUDA stream stand-in: CPU work is already ordered."""

    def __init__(self, *a, **k):
        pass

    def wait_stream(self, *a, **k):
        return None

    synchronize = record_event = wait_stream


def _none(*a, **k):
    return None


class _CpuCuda(types.SimpleNamespace):
    """``torch.cuda`` as seen by the covered megatron-core modules on CPU."""

    def __getattr__(self, name):  # anything not overridden: the real one
        return getattr(torch.cuda, name)

    current_device = staticmethod(lambda: _CPU)
    synchronize = empty_cache = nvtx = staticmethod(_none)
    is_available = staticmethod(lambda: False)
    device_count = staticmethod(lambda: 0)
    Stream = _CpuStream
    current_stream = default_stream = staticmethod(lambda *a, **k: _CpuStream())
    stream = staticmethod(lambda *a, **k: contextlib.nullcontext())
    get_rng_state = staticmethod(lambda *a, **k: torch.get_rng_state())
    set_rng_state = staticmethod(lambda state, *a, **k: torch.set_rng_state(state))
    # The tracker seeds "the CUDA generator" and reads its state back; on
    # CPU the CPU generator plays that role.
    manual_seed = staticmethod(lambda seed: torch.manual_seed(seed))


_FACTORIES = (
    "zeros", "ones", "empty", "full", "tensor", "arange", "rand", "randn",
    "randint", "zeros_like", "ones_like", "empty_like", "full_like", "as_tensor",
)


class _CpuTorch(types.ModuleType):
    """The real ``torch`` module, except ``torch.cuda`` and device="cuda"."""

    def __init__(self):
        super().__init__("torch")
        self.cuda = _CpuCuda()
        for name in _FACTORIES:
            setattr(self, name, self._wrap_factory(getattr(torch, name)))

    @staticmethod
    def _wrap_factory(fn):
        def wrapped(*args, **kwargs):
            if "device" in kwargs:
                kwargs["device"] = _to_cpu_device(kwargs["device"])
            return fn(*args, **kwargs)

        wrapped.__name__ = fn.__name__
        return wrapped

    def __getattr__(self, name):
        return getattr(torch, name)


@dataclasses.dataclass(frozen=True)
class Shim:
    module: str
    covers: tuple[str, ...]
    why: str


# Each entry: the megatron-core module whose ``torch`` is swapped for the CPU
# stand-in, and the functions in it that need it.
SHIMS: tuple[Shim, ...] = (
    Shim("megatron.core.models.common.embeddings.rotary_pos_embedding",
         ("RotaryEmbedding.__init__", "RotaryEmbedding.get_emb"),
         "moves inv_freq to torch.cuda.current_device() on first forward"),
    Shim("megatron.core.transformer.utils",
         ("get_default_causal_mask",),
         'builds the causal mask with device="cuda" when no mask is passed'),
    Shim("megatron.core.utils",
         ("GlobalMemoryBuffer.get_tensor",),
         "allocates the attention scratch buffer on torch.cuda.current_device()"),
    Shim("megatron.core.pipeline_parallel.schedules",
         ("forward_backward_no_pipelining",
          "forward_backward_pipelining_without_interleaving",
          "forward_backward_pipelining_with_interleaving"),
         'creates total_num_tokens with device="cuda"'),
    Shim("megatron.core.pipeline_parallel.p2p_communication",
         ("P2PCommunicator._communicate", "P2PCommunicator._communicate_shapes"),
         "allocates receive buffers on torch.cuda.current_device() and synchronizes"),
    Shim("megatron.core.distributed.param_and_grad_buffer",
         ("_ParamAndGradBuffer.__init__", "_ParamAndGradBucketGroup.start_grad_sync",
          "_ParamAndGradBucketGroup.finish_grad_sync"),
         "allocates the contiguous grad buffer on torch.cuda.current_device(); CUDA streams"),
    Shim("megatron.core.distributed.distributed_data_parallel",
         ("DistributedDataParallel.__init__",),
         "CUDA streams and synchronize around buffer (re)allocation"),
    Shim("megatron.core.tensor_parallel.mappings",
         ("_gather_along_last_dim", "_gather_along_first_dim",
          "_reduce_scatter_along_first_dim"),
         "allocates all-gather/reduce-scatter outputs on torch.cuda.current_device() (TP > 1)"),
    Shim("megatron.core.tensor_parallel.random",
         ("CudaRNGStatesTracker.add", "CudaRNGStatesTracker.fork",
          "model_parallel_cuda_manual_seed"),
         "keeps per-region RNG states of the CUDA generator"),
    Shim("megatron.core.parallel_state",
         ("initialize_model_parallel",),
         "barriers with device_ids=[torch.cuda.current_device()] and synchronize"),
    Shim("megatron.core.dist_checkpointing.strategies.state_dict_saver",
         ("save_state_dict_async_plan", "verify_global_md_reuse"),
         'reduces flags in tensors with device="cuda"'),
    Shim("megatron.core.dist_checkpointing.strategies.filesystem_async",
         ("FileSystemWriterAsync.prepare_write_data",),
         "torch.cuda.synchronize before staging tensors"),
    Shim("megatron.core.dist_checkpointing.strategies.async_utils",
         ("AsyncCallsQueue.maybe_finalize_async_calls",),
         "reduces completion flags in tensors on torch.cuda.current_device()"),
    Shim("megatron.core.dist_checkpointing.tensor_aware_state_dict",
         ("MCoreTensorAwareStateDict.pop_tensors",),
         "torch.cuda.synchronize"),
    Shim("megatron.core.optimizer.optimizer",
         ("MegatronOptimizer.get_grad_norm", "MixedPrecisionOptimizer._unscale_main_grads_and_check_for_nan"),
         "allocates norm/overflow buffers on torch.cuda.current_device()"),
    Shim("megatron.core.optimizer.distrib_optimizer",
         ("DistributedOptimizer.load_state_dict", "DistributedOptimizer.get_parameter_state_dp_zero"),
         "allocates state shards on torch.cuda.current_device() (see also METHOD_SHIMS)"),
    Shim("megatron.core.optimizer.clip_grads",
         ("get_grad_norm_fp32", "clip_grad_by_total_norm_fp32", "count_zeros_fp32"),
         'allocates the norm accumulator with device="cuda"'),
)


def _cpu_get_rng_state(device="cuda", clone: bool = False, graph_safe: bool = False):
    """CPU stand-in for megatron.core.tensor_parallel.random._get_cuda_rng_state."""
    return torch.get_rng_state()


def _cpu_set_rng_state(new_state, device: int = -1, graph_safe: bool = False):
    """CPU stand-in for megatron.core.tensor_parallel.random._set_cuda_rng_state.

    The original defers the set through ``torch.cuda._lazy_call``, which never
    runs without CUDA, so forked RNG regions would silently share one stream.
    """
    torch.set_rng_state(new_state)


def _cpu_clip_grad_by_total_norm_fp32(parameters, max_norm, total_norm,
                                      use_decoupled_grad: bool = False):
    """CPU stand-in for megatron.core.optimizer.clip_grads.clip_grad_by_total_norm_fp32.

    The original asserts ``param.grad.type() == 'torch.cuda.FloatTensor'``.
    Same arithmetic: scale every grad by max_norm / (total_norm + 1e-6) when
    that is below 1.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    attr = "decoupled_grad" if use_decoupled_grad else "grad"
    grads = [getattr(p, attr).detach() for p in parameters
             if getattr(p, attr, None) is not None]
    for g in grads:
        if g.dtype != torch.float32 and not (use_decoupled_grad and g.dtype == torch.bfloat16):
            raise TypeError(f"expected fp32 grads for clipping, got {g.dtype}")
    clip_coeff = max_norm / (total_norm + 1.0e-6)
    if clip_coeff < 1.0:
        torch._foreach_mul_(grads, clip_coeff)


def cos_and_folded_sin(freqs: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos(freqs), and sin(freqs) with rotate-half's sign folded into its
    first half, so that ``rotate_half(t) * sin == roll(t, d/2) * folded``
    exactly (IEEE negation commutes with the product).  Shared by the CPU
    RoPE hook below and ``models.direct_decode``."""
    half = freqs.size(-1) // 2
    sin = torch.sin(freqs)
    folded = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    return torch.cos(freqs).to(dtype), folded.to(dtype)


_rope_tables: list = []   # [(freqs, cos, sign-folded sin)] of the last freqs tensor seen


def _cpu_fused_apply_rotary_pos_emb(t: torch.Tensor, freqs: torch.Tensor,
                                    transpose_output_memory: bool = False,
                                    interleaved: bool = False) -> torch.Tensor:
    """CPU implementation behind megatron.core.models.common.embeddings.rope_utils.fused_apply_rotary_pos_emb.

    That name is megatron-core's hook for a fused RoPE kernel
    (``apply_rope_fusion``): transformer-engine fills it on a GPU, nothing
    does on a CPU, where ``_apply_rotary_pos_emb_bshd`` then takes about a
    dozen ops per query and per key in every layer (cos and sin of the same
    ``freqs`` recomputed each time, rotate-half as chunk/neg/cat, a cat with
    an empty pass-through).  Here: cos and sign-folded sin once per ``freqs``
    tensor (``RotaryEmbedding.forward`` hands every layer the same cached
    tensor), and ``rotate_half(t) * sin == roll(t, d/2) * [-sin_lo, sin_hi]``
    (IEEE negation commutes with the product), so forward and backward are
    bit for bit megatron-core's (tests/platform/test_shims.py) with three ops
    instead of twelve.  Interleaved RoPE goes to
    megatron-core's unfused function."""
    from megatron.core.models.common.embeddings import rope_utils

    if interleaved:
        return rope_utils._apply_rotary_pos_emb_bshd(t, freqs, rotary_interleaved=True)
    rot = freqs.shape[-1]
    if not _rope_tables or _rope_tables[0][0] is not freqs or _rope_tables[0][1].dtype != t.dtype:
        _rope_tables[:] = [(freqs, *cos_and_folded_sin(freqs, t.dtype))]
    _, cos, sin = _rope_tables[0]
    if rot == t.shape[-1]:
        return t * cos + torch.roll(t, rot // 2, dims=-1) * sin
    head = t[..., :rot]
    return torch.cat([head * cos + torch.roll(head, rot // 2, dims=-1) * sin, t[..., rot:]], dim=-1)


# megatron-core's DistributedOptimizer on CPU (seen in 0.16.1, torch 2.13):
# gloo has the reduce-scatter and all-gather it needs; what fails is below,
# each wrapper running the original unchanged around its fix.

@contextlib.contextmanager
def _cuda_type_names():
    """While active, ``Tensor.type()`` (no argument) names a CPU float tensor
    by its CUDA type (``torch.cuda.FloatTensor``); other calls are the real one."""
    real = torch.Tensor.type

    def type_(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None and not kwargs and self.device.type == "cpu":
            name = real(self)
            return name.replace("torch.", "torch.cuda.", 1) if self.is_floating_point() else name
        return real(self, dtype, non_blocking, **kwargs)

    torch.Tensor.type = type_
    try:
        yield
    finally:
        torch.Tensor.type = real


def _torch_adam(optimizer):
    inner = optimizer.optimizer
    return inner if isinstance(inner, (torch.optim.Adam, torch.optim.AdamW)) else None


def _cpu_build_model_and_main_param_groups(original):
    """CPU wrapper of DistributedOptimizer._build_model_and_main_param_groups: it
    sorts parameters by ``param.type()`` and refuses all but ``torch.cuda.*``
    names, although its sharding is plain views; run with CUDA type names."""
    def wrapped(*args, **kwargs):
        with _cuda_type_names():
            return original(*args, **kwargs)
    return wrapped


def _cpu_distributed_optimizer_state_dict(original):
    """CPU wrapper of DistributedOptimizer.state_dict: without apex/TE it reads
    ``step`` from torch AdamW's per-parameter state, which exists only after a
    first step, so loading into a fresh optimizer (every resume) fails; create
    that state first exactly as torch's first step would (step 0, zero moments)."""
    def wrapped(self, *args, **kwargs):
        adam = _torch_adam(self)
        for p in [] if adam is None else [p for g in adam.param_groups for p in g["params"]]:
            if not adam.state[p]:
                adam.state[p].update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p),
                                     exp_avg_sq=torch.zeros_like(p))
        return original(self, *args, **kwargs)
    return wrapped


def _cpu_set_main_param_and_optimizer_states(original):
    """CPU wrapper of DistributedOptimizer._set_main_param_and_optimizer_states:
    it copies every key of torch AdamW's state from the loaded tensors, and
    the fully reshardable layout holds no ``step`` (KeyError; load_state_dict
    has set it already); pass the step in place through."""
    def wrapped(self, model_param, tensors):
        current = self._get_main_param_and_optimizer_states(model_param)
        if "step" not in tensors and "step" in current:
            tensors = {**tensors, "step": current["step"]}
        return original(self, model_param, tensors)
    return wrapped


def _cpu_distributed_optimizer_load_state_dict(original):
    """CPU wrapper of DistributedOptimizer.load_state_dict: without apex/TE it
    gives every parameter's AdamW state the *same* ``step`` tensor (torch does
    not copy it), which AdamW then advances once per parameter per step, so a
    resumed run drifts from the second step on; give each its own copy."""
    def wrapped(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        adam, seen = _torch_adam(self), set()
        for state in [] if adam is None else adam.state.values():
            if torch.is_tensor(state.get("step")):
                if id(state["step"]) in seen:
                    state["step"] = state["step"].clone()
                seen.add(id(state["step"]))
        return out
    return wrapped


# Class attributes wrapped in place: (module, class, attribute, wrapper
# factory taking the original function; ``__wrapped__`` keeps the original).
METHOD_SHIMS = tuple(("megatron.core.optimizer.distrib_optimizer", "DistributedOptimizer", attr,
                      f"_cpu_{name}") for attr, name in (
    ("_build_model_and_main_param_groups", "build_model_and_main_param_groups"),
    ("state_dict", "distributed_optimizer_state_dict"),
    ("_set_main_param_and_optimizer_states", "set_main_param_and_optimizer_states"),
    ("load_state_dict", "distributed_optimizer_load_state_dict")))

# Functions replaced outright: (module, attribute, replacement).
FUNCTION_SHIMS = (
    ("megatron.core.tensor_parallel.random", "_get_cuda_rng_state", "_cpu_get_rng_state"),
    ("megatron.core.tensor_parallel.random", "_set_cuda_rng_state", "_cpu_set_rng_state"),
    ("megatron.core.optimizer.clip_grads", "clip_grad_by_total_norm_fp32",
     "_cpu_clip_grad_by_total_norm_fp32"),
    # optimizer.py imported the name directly; patch its binding too.
    ("megatron.core.optimizer.optimizer", "clip_grad_by_total_norm_fp32",
     "_cpu_clip_grad_by_total_norm_fp32"),
    # megatron-core's fused-RoPE hook (None without transformer-engine)
    ("megatron.core.models.common.embeddings.rope_utils", "fused_apply_rotary_pos_emb",
     "_cpu_fused_apply_rotary_pos_emb"),
)

_installed: list[str] = []


def install_cpu_shims() -> list[str]:
    """Install every shim in :data:`SHIMS`, :data:`FUNCTION_SHIMS` and
    :data:`METHOD_SHIMS`; idempotent; refused where CUDA is available.
    Returns what was patched."""
    if cuda_available():
        raise RuntimeError("CPU shims must not be installed when CUDA is available")
    if _installed:
        return list(_installed)
    cpu_torch = _CpuTorch()
    for shim in SHIMS:
        mod = importlib.import_module(shim.module)
        mod.torch = cpu_torch
        _installed.append(shim.module)
    for module, attr, repl in FUNCTION_SHIMS:
        mod = importlib.import_module(module)
        if not hasattr(mod, attr):
            raise RuntimeError(f"megatron-core changed: {module}.{attr} is gone; update FUNCTION_SHIMS")
        setattr(mod, attr, globals()[repl])
        _installed.append(f"{module}.{attr}")
    for module, cls_name, attr, factory in METHOD_SHIMS:
        cls = getattr(importlib.import_module(module), cls_name)
        original = inspect.getattr_static(cls, attr, None)
        if original is None:
            raise RuntimeError(f"megatron-core changed: {module}.{cls_name}.{attr} is gone; "
                               "update METHOD_SHIMS")
        kind = type(original) if isinstance(original, (staticmethod, classmethod)) else None
        wrapped = globals()[factory](original.__func__ if kind else original)
        wrapped.__wrapped__ = original.__func__ if kind else original
        setattr(cls, attr, kind(wrapped) if kind else wrapped)
        _installed.append(f"{module}.{cls_name}.{attr}")
    return list(_installed)


def shims_installed() -> bool:
    return bool(_installed)


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
