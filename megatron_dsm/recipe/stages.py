"""What every stage kind shares: where its outputs go, how a stage names
another stage's output, its tool's options, and the checks of a whole
recipe that run before anything does.

An input of a stage is a stage name (that stage's output of the kind the
input needs: a corpus, a data prefix, a checkpoint), ``task`` (the
generated task's file) or a path.  ``check`` refuses, each with one
``ConfigError``: a stage name that is not in the recipe or comes later, a
stage that makes no output of the needed kind, a path that does not exist,
an option a stage's tool does not have (or one the recipe sets itself), a
model option ``ModelConfig`` does not have, and a tokenizer that differs
between stages (a stage YAML naming another tokenizer, data tokenized with
another one, a checkpoint whose vocabulary does not fit it).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Callable

from megatron_dsm.config import ConfigError, check_value, flag_name, load_yaml
from megatron_dsm.data.tokenizer import TokenizerError, build_tokenizer
from megatron_dsm.models.config import ModelConfig, from_checkpoint
from megatron_dsm.recipe.schema import STAGES, TASK, Recipe, StageSpec
from megatron_dsm.recipe.steps import REPO, Step

# what each stage writes, by the kind of output a later stage asks for
OUTPUTS = {
    "mine": {"corpus": "corpus.jsonl"},
    "decontaminate": {"corpus": "corpus.jsonl"},
    "preprocess": {"prefix": "corpus_text_document", "tokenizer": "tokenizer"},
    "pretrain": {"checkpoint": "ckpt"},
    "sft": {"checkpoint": "ckpt"},
    "reward_model": {"checkpoint": "ckpt"},
    "rl": {"checkpoint": "ckpt"},
    "evaluate": {"metrics": "metrics.json"},
}
# the task's file for each kind of input (recipe/task.py writes them)
TASK_FILES = {"sft": "sft.jsonl", "train": "train.jsonl", "heldout": "heldout.jsonl",
              "rm_questions": "rm_questions.jsonl", "benchmarks": "benchmarks", "pages": "pages.jsonl"}


class Context:
    """A recipe with the paths its stages use."""

    def __init__(self, recipe: Recipe, python: str):
        self.recipe, self.python = recipe, python

    def dir(self, stage: str) -> Path:
        return self.recipe.stage_dir(stage)

    @property
    def task_dir(self) -> Path:
        return self.recipe.output / "task"

    def task_file(self, kind: str) -> Path:
        return self.task_dir / TASK_FILES[kind]

    @property
    def tokenizer(self) -> str:
        """The recipe's tokenizer path ("" for the byte tokenizer)."""
        tok = self.recipe.tokenizer
        if tok.model or tok.type == "byte":
            return tok.model
        return str(self.dir("preprocess") / OUTPUTS["preprocess"]["tokenizer"])

    @property
    def tokenizer_type(self) -> str:
        return self.recipe.tokenizer.type

    def resolve(self, ref: str, kind: str) -> str:
        """The path an input names: a stage's output, the task's file, or itself."""
        if ref in STAGES:
            return str(self.dir(ref) / OUTPUTS[ref][kind])
        if ref == TASK:
            return str(self.task_file(kind))
        return ref

    def upstream(self, stage: str) -> list[str]:
        """Stages whose outputs this stage reads (the trained tokenizer included)."""
        kind = KINDS[stage]
        spec = self.recipe.stages[stage]
        names = [getattr(spec, f) for f in kind.inputs(spec)]
        if kind.uses_tokenizer and self.recipe.tokenizer.trained and stage != "preprocess":
            names.append("preprocess")
        return sorted({n for n in names if n in self.recipe.stages and n != stage}, key=STAGES.index)


@dataclasses.dataclass
class Kind:
    """A stage kind: its tool's option classes, the options the recipe sets
    itself, its inputs (spec field -> kind of output), and its steps and
    metrics."""

    name: str
    option_classes: tuple
    reserved: tuple[str, ...]
    inputs_of: dict[str, str]
    steps: Callable[[Context, StageSpec], list[Step]]
    metrics: Callable[[Context, StageSpec], dict]
    row: Callable[[dict], tuple[str, str, str]]
    uses_tokenizer: bool = True
    plan_stage: str | None = None           # the planner's stage for --dry-run (training stages)

    def inputs(self, spec: StageSpec) -> dict[str, str]:
        out = dict(self.inputs_of)
        if self.name == "rl" and getattr(spec, "reward") != "orm":
            out.pop("reward_model", None)
        return {f: k for f, k in out.items() if getattr(spec, f)}


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    KINDS[kind.name] = kind
    return kind


# ---------------------------------------------------------------------------
# tool options


def _fields(classes: tuple) -> dict[str, tuple[type, dataclasses.Field]]:
    """Option name -> (class, field), by field name and by flag (``--dedup-method`` -> dedup_method)."""
    out = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.init:
                out.setdefault(f.name, (cls, f))
                out.setdefault(flag_name(f).lstrip("-").replace("-", "_"), (cls, f))
    return out


def checked_args(args: dict, classes: tuple, where: str, reserved: tuple[str, ...] = ()) -> dict:
    """``args`` checked against the tool's option classes: names (field or
    flag spelling), types, choices and ranges; ``reserved`` names are the
    recipe's to set."""
    if not isinstance(args, dict):
        raise ConfigError(f"{where}: must be a mapping of option: value")
    fields = _fields(classes)
    out = {}
    for key, value in args.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name in reserved:
            raise ConfigError(f"{where}.{name}: set by the recipe (from the stage's inputs and outputs)")
        if name not in fields:
            near = difflib.get_close_matches(name, sorted(fields), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"{where}.{name}: unknown option of this stage's tool{hint}")
        cls, f = fields[name]
        if f.name in reserved:
            raise ConfigError(f"{where}.{name}: set by the recipe (from the stage's inputs and outputs)")
        out[f.name] = check_value(cls, f.name, value, f"{where}.{name}")
    return out


def to_flags(values: dict, classes: tuple) -> list[str]:
    """Command-line flags for checked option values (the tools' own spelling)."""
    fields = _fields(classes)
    argv: list[str] = []
    for name, value in values.items():
        if value is None:
            continue
        flag = flag_name(fields[name][1])
        if isinstance(value, bool):
            argv += [flag, "true" if value else "false"]
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def stage_flags(recipe: Recipe, name: str, extra: dict | None = None) -> list[str]:
    """``--config`` (when the stage names one) and the stage's ``args`` as flags."""
    spec, kind = recipe.stages[name], KINDS[name]
    classes = kind.option_classes
    values = checked_args({**(extra or {}), **spec.args}, classes, recipe.where(f"stages.{name}.args"),
                          kind.reserved)
    return (["--config", spec.config] if spec.config else []) + to_flags(values, classes)


# ---------------------------------------------------------------------------
# checks


def _check_ref(recipe: Recipe, stage: str, fname: str, kind: str, missing: list[str] | None = None) -> None:
    value = getattr(recipe.stages[stage], fname)
    where = recipe.where(f"stages.{stage}.{fname}")
    if value in STAGES:
        if value not in recipe.stages:
            raise ConfigError(f"{where}: stage {value!r} is not in this recipe (give a path instead)")
        if STAGES.index(value) >= STAGES.index(stage):
            raise ConfigError(f"{where}: stage {value!r} runs after {stage!r}")
        if kind not in OUTPUTS[value]:
            raise ConfigError(f"{where}: stage {value!r} makes no {kind} "
                              f"(it makes: {', '.join(OUTPUTS[value])})")
        return
    if value == TASK:
        if recipe.task is None:
            raise ConfigError(f"{where}: 'task' needs a task: section in the recipe")
        return
    if not _exists(value):
        near = difflib.get_close_matches(value, list(recipe.stages) + [TASK], n=1)
        hint = f" (did you mean the stage {near[0]!r}?)" if near else ""
        _missing(f"{where}: {value}: no such file, folder or stage{hint}", missing)


def _missing(msg: str, missing: list[str] | None) -> None:
    """A path that does not exist (yet): an error, or in a dry run a line of the plan."""
    if missing is None:
        raise ConfigError(msg)
    missing.append(msg)


def _exists(path: str) -> bool:
    p = Path(path)
    if p.exists():
        return True
    # a Megatron data prefix names PREFIX.bin / PREFIX.idx
    return Path(path + ".bin").is_file() and Path(path + ".idx").is_file()


def _check_paths(recipe: Recipe, stage: str, fields: tuple[str, ...], missing: list[str] | None) -> None:
    spec = recipe.stages[stage]
    for fname in fields:
        values = getattr(spec, fname)
        for v in values if isinstance(values, list) else [values]:
            if v and not _exists(v):
                _missing(f"{recipe.where(f'stages.{stage}.{fname}')}: {v}: no such file or folder", missing)
    if spec.config and not Path(spec.config).is_file():
        raise ConfigError(f"{recipe.where(f'stages.{stage}.config')}: {spec.config}: no such file")


def check(recipe: Recipe, *, local: bool = False, missing: list[str] | None = None) -> None:
    """Every check of the module docstring; the first failure raises.  With
    ``missing`` (a dry run), inputs that do not exist on this machine are
    listed there instead: the plan of a cluster recipe is shown anywhere."""
    checked_args(recipe.model, (ModelConfig,), recipe.where("model"))
    if recipe.tokenizer.trained and "preprocess" not in recipe.stages:
        raise ConfigError(recipe.where("tokenizer.model") + ": required when the recipe has no preprocess "
                                                            "stage to train one")
    if recipe.tokenizer.model and not Path(recipe.tokenizer.model).exists():
        _missing(f"{recipe.where('tokenizer.model')}: {recipe.tokenizer.model}: no such file or folder", missing)
    for name, spec in recipe.stages.items():
        kind = KINDS[name]
        for fname, out_kind in kind.inputs(spec).items():
            _check_ref(recipe, name, fname, out_kind, missing)
        _check_paths(recipe, name, PATH_FIELDS.get(name, ()), missing)
        stage_flags(recipe, name)
        if local and spec.nodes > 1:
            raise ConfigError(f"{recipe.where(f'stages.{name}.nodes')}: {spec.nodes} nodes need --executor slurm")
    check_tokenizer(recipe)


PATH_FIELDS = {"mine": ("input", "seed_positives", "negatives")}


def _fingerprint(recipe: Recipe, ctx: Context) -> tuple[str, int] | None:
    """(fingerprint, vocab) of the recipe's tokenizer, when it exists already."""
    tok = recipe.tokenizer
    path = ctx.tokenizer
    if tok.type != "byte" and not (path and Path(path).exists()):
        return None
    try:
        t = build_tokenizer(tok.type, path or None)
    except TokenizerError as e:
        raise ConfigError(f"{recipe.where('tokenizer')}: {e}") from None
    return t.fingerprint, int(t.vocab_size)


def check_tokenizer(recipe: Recipe) -> None:
    """One tokenizer through the whole path: stage YAMLs that name another,
    data tokenized with another, checkpoints whose vocabulary it overflows."""
    ctx = Context(recipe, "")
    ours = _fingerprint(recipe, ctx)
    for name, spec in recipe.stages.items():
        where = recipe.where(f"stages.{name}")
        if spec.config:
            for section in ("rl", "rm", "sft", "train"):
                named = load_yaml(spec.config, section).get("tokenizer_model")
                if named and str(Path(named)) != str(Path(ctx.tokenizer)):
                    raise ConfigError(f"{where}.config: {spec.config} names tokenizer {named}, but the recipe's "
                                      f"stages use {ctx.tokenizer or 'the byte tokenizer'}: tokenizer mismatch")
        if ours is None:
            continue
        data = getattr(spec, "data", "")
        if name == "pretrain" and data and data not in STAGES and Path(data + ".json").is_file():
            side = json.loads(Path(data + ".json").read_text()).get("tokenizer") or {}
            if side.get("fingerprint") and side["fingerprint"] != ours[0]:
                raise ConfigError(f"{where}.data: {data} was tokenized with another tokenizer (fingerprint "
                                  f"{side['fingerprint'][:12]}) than the recipe's ({ours[0][:12]}): "
                                  "tokenizer mismatch")
        load = getattr(spec, "load", "")
        if load and load not in STAGES and (Path(load) / "latest_checkpointed_iteration.txt").is_file():
            _check_vocab(where + ".load", load, ours[1])


def _check_vocab(where: str, checkpoint: str, vocab: int) -> None:
    cfg = from_checkpoint(checkpoint)
    if cfg.vocab_size is not None and vocab > cfg.padded_vocab_size(1):
        raise ConfigError(f"{where}: {checkpoint} has a vocabulary of {cfg.vocab_size}, the recipe's tokenizer "
                          f"{vocab}: tokenizer mismatch")


def repo_path(rel: str) -> str:
    return str(REPO / rel)
