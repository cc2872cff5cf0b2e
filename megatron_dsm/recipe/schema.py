"""A recipe file, read and checked: its sections as option dataclasses.

    name: demo
    output: runs/demo
    task: {...}            # the generated task (recipe/task.py); optional
    tokenizer: {...}       # TokenizerSpec: one tokenizer for every stage
    model: {...}           # ModelConfig options every training stage gets
    executor: {...}        # SlurmSpec: the Slurm executor's options
    stages:                # in the order of STAGES; any subset
      mine: {...}
      ...

Every section is an ``@options`` dataclass, so a value is checked where it
is read and an error names the file and the key (``demo.yaml:
stages.sft.lr: unknown option (did you mean ...)``).  A stage's ``args``
are its tool's own options (field names or flag spelling); they are checked
against the tool's config dataclasses by ``recipe.stages`` before anything
runs.  ``--set stages.pretrain.args.train_iters=20`` overrides any key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import yaml

from megatron_dsm.config import ConfigError, YamlSection, checked_values, field, options
from megatron_dsm.recipe.task import TaskConfig

STAGES = ("mine", "decontaminate", "preprocess", "pretrain", "sft", "reward_model", "rl", "evaluate")
TASK = "task"              # an input naming the recipe's generated task
TRAIN_TYPES = ("bytelevel-bpe", "sentencepiece-bpe", "sentencepiece-unigram")


@options
class TokenizerSpec:
    """The one tokenizer of the recipe: given, or trained on the corpus by
    the preprocess stage (``tools/train_tokenizer.py``)."""

    model: str = field("", help="tokenizer to use as is (tokenizer.json, its folder, a SentencePiece "
                                ".model); empty: preprocess trains one on the decontaminated corpus")
    type: str = field("auto", choices=("auto", "hf", "sentencepiece", "byte"),
                      help="kind of the given tokenizer (auto: from the file)")
    train_type: str = field("bytelevel-bpe", choices=TRAIN_TYPES, help="kind of the trained tokenizer")
    vocab_size: int = field(1024, min=300, help="vocabulary of the trained tokenizer")
    max_chars: int = field(200_000_000, min=1, help="characters of the corpus the trainer reads at most")

    @property
    def trained(self) -> bool:
        return not self.model and self.type != "byte"


@options
class SlurmSpec:
    """The Slurm executor (``--executor slurm``): one sbatch job per stage."""

    partition: str = field("", help="partition of every stage job (default: the cluster's)")
    time: str = field("24:00:00", help="time limit of a stage job (a stage's own `time` wins)")
    gpus: bool = field(False, help="ask for --gpus-per-node = the stage's gpus_per_node")
    gpu_memory: float = field(80.0, min=1.0, help="GiB of one GPU, for the dry run's memory check")
    sbatch_args: list[str] = field(default_factory=list, help="more sbatch options for every job")
    python: str = field("", help="interpreter of the jobs (default: the one running the recipe)")


@options
class StageSpec:
    """Options every stage has."""

    kind: ClassVar[str] = ""
    output: str = field("", help="where the stage writes (default: OUTPUT/<stage>)")
    nodes: int = field(1, min=1, help="nodes of the stage")
    gpus_per_node: int = field(1, min=1, help="ranks per node of its training tool (torchrun "
                                              "--nproc-per-node; the Slurm job's GPUs or tasks)")
    cpus_per_task: int = field(1, min=1, help="Slurm: CPUs per task of the stage job")
    time: str = field("", help="Slurm: time limit of the stage job")
    config: str = field("", help="the tool's own YAML (examples/configs/...), under `args`")
    args: dict = field(default_factory=dict, help="the tool's options, by name (flag spelling allowed)")
    threads: int = field(1, min=1, help="OMP threads of each process the stage starts")


@options
class MineSpec(StageSpec):
    kind: ClassVar[str] = "mine"
    input: list[str] = field(default_factory=list, help="web pages (files or folders: WARC/WET/jsonl)")
    seed_positives: list[str] = field(default_factory=list, help="jsonl(.gz) files of seed math pages")
    negatives: str = field("", help="jsonl(.gz) of negatives (default: random pool pages)")
    task_pages: bool = field(True, help="mix the task's worked-solution pages into the pool and seed")


@options
class DecontaminateSpec(StageSpec):
    kind: ClassVar[str] = "decontaminate"
    input: str = field("mine", help="corpus: a stage or a jsonl file")
    benchmarks: str = field(TASK, help="benchmarks folder (`task`: the vendored GSM8K / MATH test "
                                       "sets and the task's held-out split)")
    action: str = field("remove-segments", choices=("remove-segments", "drop-record"),
                        help="cut contaminated segments out, or drop the whole page")


@options
class PreprocessSpec(StageSpec):
    kind: ClassVar[str] = "preprocess"
    input: str = field("decontaminate", help="corpus: a stage or a jsonl file")


@options
class PretrainSpec(StageSpec):
    kind: ClassVar[str] = "pretrain"
    data: str = field("preprocess", help="a stage, a data prefix or a mixture YAML")
    load: str = field("", help="checkpoint to continue from (weights only), e.g. a converted base model")
    heldout: bool = field(True, help="measure accuracy on the task's held-out split")


@options
class SFTSpec(StageSpec):
    kind: ClassVar[str] = "sft"
    data: str = field(TASK, help="jsonl of SFT examples (`task`: the task's), or a packed prefix")
    load: str = field("pretrain", help="initial weights: a stage or a checkpoint")
    build_args: dict = field(default_factory=dict, help="tools/build_sft_data.py options")
    heldout: bool = field(True, help="measure accuracy on the task's held-out split")


@options
class RewardModelSpec(StageSpec):
    kind: ClassVar[str] = "reward_model"
    load: str = field("sft", help="policy sampled for the data, and the backbone's initial weights")
    questions: str = field(TASK, help="jsonl {question, answer} the policy is sampled on")
    data: str = field("", help="ready outcome records {question, solution, label} instead of sampling")
    samples: int = field(4, min=1, help="samples per question")
    temperature: float = field(1.0, min=0.01, help="sampling temperature")
    max_new_tokens: int = field(32, min=1, help="length of a sample")
    valid_fraction: float = field(0.2, min=0.01, max=0.9, help="questions held out for the AUC")


@options
class RLSpec(StageSpec):
    kind: ClassVar[str] = "rl"
    load: str = field("sft", help="initial policy: a stage or a checkpoint")
    questions: str = field(TASK, help="jsonl {question, answer} of the RL questions")
    heldout_questions: str = field(TASK, help="held-out jsonl for the RL loop's own evaluation")
    reward: str = field("rule", choices=("rule", "orm"), help="rule: the grader; orm: the reward model")
    reward_model: str = field("reward_model", help="reward-model checkpoint (reward: orm): a stage or a path")
    heldout: bool = field(True, help="measure accuracy on the task's held-out split")


@options
class EvaluateSpec(StageSpec):
    kind: ClassVar[str] = "evaluate"
    load: str = field("rl", help="the model evaluated: a stage or a checkpoint")
    benchmarks: list[str] = field(default_factory=lambda: ["arith_heldout"],
                                  help="benchmarks (arith_heldout: the task's held-out split)")


SPECS: dict[str, type] = {c.kind: c for c in (MineSpec, DecontaminateSpec, PreprocessSpec, PretrainSpec,
                                              SFTSpec, RewardModelSpec, RLSpec, EvaluateSpec)}
TOP = ("name", "output", "description", "task", "tokenizer", "model", "executor", "stages")


@dataclasses.dataclass
class Recipe:
    """A checked recipe: its sections as dataclasses, its stages in order."""

    path: str
    name: str
    output: Path
    description: str
    task: TaskConfig | None
    tokenizer: TokenizerSpec
    model: dict
    executor: SlurmSpec
    stages: dict[str, StageSpec]
    overrides: list[str] = dataclasses.field(default_factory=list)

    def where(self, key: str) -> str:
        return f"{self.path}: {key}"

    def stage_dir(self, name: str) -> Path:
        out = self.stages[name].output
        return Path(out) if out else self.output / name

    def section_hash(self, name: str) -> str:
        """What decides a stage's result besides its inputs: its section and
        the recipe-wide sections it reads (model, tokenizer, task)."""
        spec = self.stages[name]
        blob = {"stage": dataclasses.asdict(spec), "model": self.model,
                "tokenizer": dataclasses.asdict(self.tokenizer),
                "task": dataclasses.asdict(self.task) if self.task else None}
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _set(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    keys = dotted.split(".")
    for k in keys[:-1]:
        if not isinstance(node.get(k, {}), dict):
            raise ConfigError(f"--set {dotted}: {k} is not a section")
        node = node.setdefault(k, {})
    node[keys[-1]] = value


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``30:00`` as the base-60 number 1800: a recipe's Slurm
    times (``time: 30:00``, ``--set executor.time=30:00``) stay strings."""


def _number_or_time(loader, node):
    if ":" in node.value:
        return node.value
    ctor = yaml.SafeLoader.construct_yaml_int if node.tag.endswith(":int") else yaml.SafeLoader.construct_yaml_float
    return ctor(loader, node)


_Loader.add_constructor("tag:yaml.org,2002:int", _number_or_time)
_Loader.add_constructor("tag:yaml.org,2002:float", _number_or_time)


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """``key.path=value`` pairs (values read as YAML) over the file's tree."""
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. stages.pretrain.args.train_iters=20")
        try:
            value = yaml.load(raw, Loader=_Loader)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        _set(tree, key.strip(), value)
    return tree


def _section(cls: type, values: Any, path: str, key: str):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: {key} must be a mapping")
    section = YamlSection({str(k).replace("-", "_"): v for k, v in values.items()}, path, key)
    try:
        return cls(**checked_values(cls, None, section))
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(path) else f"{path}: {key}: {msg}") from None


def _unknown(kind: str, key: str, known, path: str) -> ConfigError:
    near = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return ConfigError(f"{path}: {key}: unknown {kind}{hint}; known: {', '.join(known)}")


def read_tree(path: str | Path, overrides: list[str] = ()) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe not found: {p}")
    try:
        tree = yaml.load(p.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{p}: the top level must be a mapping")
    return apply_overrides(tree, list(overrides))


def load(path: str | Path, overrides: list[str] = (), output: str | None = None) -> Recipe:
    """Read a recipe and check its sections (not yet its inputs: ``recipe.check``)."""
    path = str(path)
    tree = read_tree(path, overrides)
    for k in tree:
        if k not in TOP:
            raise _unknown("section", str(k), TOP, path)
    for k in ("name", "output"):
        if not isinstance(tree.get(k), str) or not tree[k]:
            raise ConfigError(f"{path}: {k}: a string is required")
    stages_tree = tree.get("stages") or {}
    if not isinstance(stages_tree, dict) or not stages_tree:
        raise ConfigError(f"{path}: stages: at least one stage is required ({', '.join(STAGES)})")
    stages: dict[str, StageSpec] = {}
    for name in stages_tree:
        if name not in SPECS:
            raise _unknown("stage", f"stages.{name}", STAGES, path)
    order = [n for n in STAGES if n in stages_tree]
    if list(stages_tree) != order:
        raise ConfigError(f"{path}: stages: must appear in the order {', '.join(order)}")
    for name in order:
        stages[name] = _section(SPECS[name], stages_tree[name], path, f"stages.{name}")
    task = _section(TaskConfig, tree["task"], path, "task") if tree.get("task") is not None else None
    return Recipe(path=path, name=tree["name"], output=Path(output or tree["output"]),
                  description=str(tree.get("description") or ""), task=task,
                  tokenizer=_section(TokenizerSpec, tree.get("tokenizer"), path, "tokenizer"),
                  model=dict(tree.get("model") or {}),
                  executor=_section(SlurmSpec, tree.get("executor"), path, "executor"),
                  stages=stages, overrides=list(overrides))
