"""Checkpoints through megatron-core's dist_checkpointing.

Layout (DESIGN.md): ``SAVE/iter_0000100/`` plus
``SAVE/latest_checkpointed_iteration.txt``.  A save goes to
``SAVE/iter_0000100.tmp`` and is renamed when every rank has finished; the
``latest`` file is then replaced atomically.  A run killed mid-save therefore
leaves the previous checkpoint and the ``latest`` file pointing at it.

The model and optimizer are saved as sharded tensors, so a checkpoint written
at one TP/PP layout loads at another, and between layer specs: module extra
state (transformer-engine's) that a checkpoint lacks is not asked for
(``load_sharded``).  Other models of a run (RL's frozen reference) go in a
dist checkpoint of their own inside it (``save_module``/``load_module``).  RNG states are per rank (one file each)
and are restored only when the layout is unchanged; the rest (iteration,
scheduler, data position, config) is common state.

The functions take the model *module* (the GPTModel, not megatron-core's DDP
wrapper: ``models.gpt.unwrap``), since ``sharded_state_dict`` lives there;
this module sits below the model code and imports none of it.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Callable

import torch
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.validation import StrictHandling
from megatron.core import parallel_state as ps
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

from megatron_dsm.io import atomic_write, replace_dir

LATEST = "latest_checkpointed_iteration.txt"


class CheckpointError(RuntimeError):
    pass


def iter_dir(root: str | os.PathLike, iteration: int) -> Path:
    return Path(root) / f"iter_{iteration:07d}"


def read_latest(root: str | os.PathLike) -> int | None:
    p = Path(root) / LATEST
    if not p.is_file():
        return None
    text = p.read_text().strip()
    if text == "release":
        return 0
    try:
        return int(text)
    except ValueError:
        raise CheckpointError(f"{p}: expected an iteration number, found {text!r}") from None


def find_checkpoint(load: str) -> tuple[Path, int]:
    """The directory to load and its iteration; one clear error if none."""
    root = Path(load)
    if not root.exists():
        raise CheckpointError(f"--load {load}: no such directory")
    # A direct iter_XXXXXXX directory is accepted too.
    if root.name.startswith("iter_") and (root / "metadata.json").is_file():
        return root, int(root.name[5:])
    it = read_latest(root)
    if it is None:
        raise CheckpointError(f"--load {load}: no checkpoint ({LATEST} not found)")
    d = iter_dir(root, it)
    if not (d / "metadata.json").is_file():
        raise CheckpointError(f"--load {load}: {LATEST} names iteration {it} but {d} is missing or incomplete")
    return d, it


def _fault_point(where: str, iteration: int) -> None:
    """Fault injection for the crash-consistency test: with
    ``DSM_FAULT_INJECT=kill_during_save:N`` the whole process group (the job,
    as when a node dies) is SIGKILLed after iteration N's shards are written
    and before they are published.  Run it in its own session."""
    spec = os.environ.get("DSM_FAULT_INJECT", "")
    if spec == f"kill_during_{where}:{iteration}":
        os.killpg(os.getpgid(0), signal.SIGKILL)


def _barrier():
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _world() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def _layout() -> dict:
    return {"tp": ps.get_tensor_model_parallel_world_size(),
            "pp": ps.get_pipeline_model_parallel_world_size(),
            "world": _world()}


def _is_distributed(optimizer) -> bool:
    inner = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    return any(isinstance(o, DistributedOptimizer) for o in inner)


def sharded_state(module, optimizer=None, *, is_loading: bool = False) -> dict:
    model_sd = module.sharded_state_dict()
    sd = {"model": model_sd}
    if optimizer is not None:
        kw = {}
        if _is_distributed(optimizer):
            # megatron-core's default layout for DistributedOptimizer state
            # ("fully_sharded_model_space") saves flattened ranges, which its
            # own torch_dist format refuses (0.16.1).  "fully_reshardable"
            # stores one tensor per parameter, so the state loads at any
            # TP/PP/DP as the model's does; "mem_efficient" gathers each DP
            # group's shards over gloo into host memory of its first rank
            # (no full state on every GPU; gloo also serves a CPU run).
            kw["metadata"] = {"distrib_optim_sharding_type": "fully_reshardable",
                              "distrib_optim_fully_reshardable_mem_efficient": True}
        sd["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=is_loading, **kw)
    return sd


def save_checkpoint(root: str, iteration: int, module, optimizer, common: dict,
                    rng_state: dict | None = None,
                    write_files: Callable[[Path], None] | None = None) -> Path:
    """Save and publish ``iter_{iteration}``; returns its final path.

    ``write_files(dir)`` (every rank) adds files of its own, such as the RL
    stage's frozen reference model or a critic, to the checkpoint *before*
    it is published, so that a run killed mid-save never leaves a published
    checkpoint without them."""
    root_p = Path(root)
    final = iter_dir(root_p, iteration)
    tmp = final.with_name(final.name + ".tmp")
    if _rank() == 0:
        root_p.mkdir(parents=True, exist_ok=True)
        # Leftovers of an interrupted save are never loaded; clear them.
        for stale in root_p.glob("iter_*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    sd = sharded_state(module, optimizer)
    sd["common"] = dict(common, layout=_layout())
    dist_checkpointing.save(sd, str(tmp))
    if rng_state is not None:
        (tmp / "rng").mkdir(exist_ok=True)
        torch.save(rng_state, tmp / "rng" / f"rank_{_rank():05d}.pt")
    if write_files is not None:
        write_files(tmp)
    _fault_point("save", iteration)
    _barrier()
    if _rank() == 0:
        replace_dir(tmp, final)   # re-saving the same iteration replaces it
        atomic_write(root_p / LATEST, str(iteration), fsync=True)
    _barrier()
    return final


def save_module(module, directory: str | os.PathLike) -> Path:
    """``module``'s weights as a dist checkpoint of their own in ``directory``
    (created here; every rank calls): models saved beside a run's state,
    such as RL's frozen reference.  Sharded by TP/PP and written once, not
    once per data-parallel replica, so it loads at another layout."""
    d = Path(directory)
    if _rank() == 0:
        d.mkdir(parents=True)
    _barrier()
    dist_checkpointing.save(module.sharded_state_dict(), str(d))
    return d


def load_module(module, directory: str | os.PathLike) -> None:
    """Load ``save_module``'s ``directory`` into ``module`` (any TP/PP)."""
    d = Path(directory)
    if not (d / "metadata.json").is_file():
        raise CheckpointError(f"{d} is missing or incomplete (no metadata.json)")
    loaded = load_sharded(module.sharded_state_dict(), d)
    module.load_state_dict(keep_own_extra_state(module, loaded), strict=True)


def read_common(load: str) -> dict:
    """The common (non-tensor) state of the checkpoint ``load`` points at."""
    ckpt, _ = find_checkpoint(load)
    return dist_checkpointing.load_common_state_dict(str(ckpt)).get("common", {})


def read_model_config(load: str) -> dict:
    """The model config a training-loop checkpoint records (a dict of
    ``models.config.ModelConfig`` fields); one clear error when absent."""
    mc = read_common(load).get("model_config")
    if not isinstance(mc, dict):
        raise CheckpointError(f"{load}: no model_config in the checkpoint's common state "
                              "(not written by this project's training loop?)")
    return mc


EXTRA_STATE = "_extra_state"


def load_sharded(sd: dict, ckpt: str | os.PathLike) -> dict:
    """``dist_checkpointing.load(sd, ckpt)``, except that module extra state
    the checkpoint does not hold is not asked for (the module keeps its own:
    ``keep_own_extra_state``); any other absent key is one CheckpointError.

    Why: transformer-engine's modules declare ``_extra_state`` (their FP8
    metadata, empty without FP8) and megatron-core checkpoints it as a
    ShardedObject; a model built with the local spec (an HF import, a CPU
    run) has none for TE's norms, and loading its checkpoint into a TE-spec
    model otherwise fails with "Missing key in checkpoint state_dict:
    decoder.final_layernorm._extra_state/shard_0_1" (megatron-core 0.16.1).
    The reverse direction needs nothing: a checkpoint's keys that the model
    does not ask for are not read."""
    loaded, _, absent = dist_checkpointing.load(sd, str(ckpt), strict=StrictHandling.RETURN_UNEXPECTED)
    other = sorted(k for k in absent if EXTRA_STATE not in k)
    if other:
        raise CheckpointError(f"{ckpt}: the checkpoint has no {other[0]}"
                              + (f" (and {len(other) - 1} more keys)" if len(other) > 1 else ""))
    return loaded


def keep_own_extra_state(module, loaded: dict) -> dict:
    """``loaded`` (a state dict for ``module``) with the module's own value for
    every extra state it lacks (``load_sharded`` left them out), so that a
    strict ``load_state_dict`` accepts it."""
    for key, value in module.state_dict().items():
        if key.endswith(EXTRA_STATE) and key not in loaded:
            loaded[key] = value
    return loaded


def load_checkpoint(load: str, module, optimizer=None, *, finetune: bool = False) -> dict:
    """Load model (and unless ``finetune``, optimizer). Returns the common state
    (with ``rng`` when the layout matches and ``iteration`` reset on finetune)."""
    ckpt, iteration = find_checkpoint(load)
    common = dist_checkpointing.load_common_state_dict(str(ckpt)).get("common", {})
    sd = sharded_state(module, None if finetune else optimizer, is_loading=True)
    loaded = load_sharded(sd, ckpt)
    module.load_state_dict(keep_own_extra_state(module, loaded["model"]), strict=True)
    if not finetune and optimizer is not None:
        optimizer.load_state_dict(loaded["optimizer"])
    if finetune:
        return {"iteration": 0, "loaded_from": str(ckpt), "source_iteration": iteration}
    rng_file = ckpt / "rng" / f"rank_{_rank():05d}.pt"
    if common.get("layout") == _layout() and rng_file.is_file():
        common["rng"] = torch.load(rng_file, weights_only=False)
    common["loaded_from"] = str(ckpt)
    common.setdefault("iteration", iteration)
    return common
