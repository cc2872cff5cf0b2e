"""The eight stage kinds: the tools each runs, with which inputs, and the
effect each reports.

    mine           tools/mine_corpus.py run      pages -> recalled corpus     precision / recall
    decontaminate  tools/decontaminate.py        corpus -> clean corpus       pages cut, planted caught
    preprocess     tools/train_tokenizer.py,     clean corpus -> tokenizer,   tokens written
                   tools/preprocess_data.py      .bin/.idx/.json
    pretrain       tools/pretrain.py             data -> checkpoint           held-out loss, accuracy
    sft            tools/build_sft_data.py,      examples -> checkpoint       held-out accuracy
                   tools/sft.py
    reward_model   tools/evaluate.py (samples),  graded policy samples -> RM  held-out AUC
                   tools/train_reward_model.py
    rl             tools/grpo.py                 policy -> checkpoint         held-out accuracy
    evaluate       tools/evaluate.py             model -> metrics             accuracy per benchmark

A training stage with a task measures its checkpoint's held-out accuracy
last (``tools/recipe.py heldout``, recipe/measure.py).
"""

from __future__ import annotations

from pathlib import Path

from megatron_dsm.data.preprocess import PreprocessConfig
from megatron_dsm.data.sft import SFTDataConfig
from megatron_dsm.eval.runner import EvalConfig
from megatron_dsm.io import read_json
from megatron_dsm.mining.classifier import ClassifierConfig
from megatron_dsm.mining.decontaminate import DecontConfig
from megatron_dsm.mining.dedup import DedupConfig
from megatron_dsm.mining.iterate import MiningConfig
from megatron_dsm.mining.pipeline import ExecutorConfig
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.recipe import glue
from megatron_dsm.recipe.metrics import (eval_metrics, mine_row, pretrain_metrics, rl_metrics, rm_metrics,
                                         sft_metrics, train_row)
from megatron_dsm.recipe.stages import Context, Kind, checked_args, register, stage_flags, to_flags
from megatron_dsm.recipe.steps import Py, Tool, Train
from megatron_dsm.rl.config import RLConfig
from megatron_dsm.rl.reward_models import RMConfig
from megatron_dsm.training.arguments import TrainConfig
from megatron_dsm.training.sft import SFTConfig

TRAIN_RESERVED = ("data_path", "mixture", "save", "load", "finetune", "log_json")
SBATCH = "examples/slurm/{}.sbatch"
LOG = "stage.log"


def _model_flags(ctx: Context) -> list[str]:
    return to_flags(checked_args(ctx.recipe.model, (ModelConfig,), ctx.recipe.where("model")), (ModelConfig,))


def _start(save: Path, load_from: str) -> list[str]:
    """Resume from this stage's own checkpoint, else start from ``load_from`` (weights only)."""
    if (save / "latest_checkpointed_iteration.txt").is_file():
        return ["--load", str(save)]
    return ["--load", load_from, "--finetune"] if load_from else []


def _tok_flags(ctx: Context, type_flag: str = "--tokenizer-type") -> list[str]:
    out = [type_flag, ctx.tokenizer_type]
    return out + (["--tokenizer-model", ctx.tokenizer] if ctx.tokenizer else [])


def _heldout(ctx: Context, name: str, prompt: str, tag: str = "heldout") -> Tool:
    d = ctx.dir(name)
    return Tool(f"{tag}", "tools/recipe.py",
                ["heldout", "--checkpoint", str(d / "ckpt"), "--tokenizer", ctx.tokenizer,
                 "--questions", str(ctx.task_file("heldout")), "--prompt", prompt,
                 "--output", str(d / f"{tag}.jsonl")])


def _measures(ctx: Context, name: str, spec, prompts: tuple[str, ...]) -> list[Tool]:
    if not (getattr(spec, "heldout", False) and ctx.recipe.task is not None):
        return []
    return [_heldout(ctx, name, p, "heldout" if i == 0 else f"heldout_{p}") for i, p in enumerate(prompts)]


# ---------------------------------------------------------------------------
# mine, decontaminate, preprocess


def mine_inputs(ctx: Context, spec) -> tuple[list[str], list[str]]:
    pages, seed = list(spec.input), list(spec.seed_positives)
    if spec.task_pages and ctx.recipe.task is not None:
        pages.append(str(ctx.task_file("pages")))
        seed.append(str(ctx.task_dir / "seed_pages.jsonl"))
    return pages, seed


def mine_steps(ctx: Context, spec) -> list:
    d = ctx.dir("mine")
    pages, seed = mine_inputs(ctx, spec)
    run_args = ["--input", *pages, "--seed-positives", str(d / "seed.jsonl"), "--output", str(d / "run")]
    if spec.negatives:
        run_args += ["--negatives", spec.negatives]
    if ctx.recipe.tokenizer.model:   # the token budget counts the recipe's tokenizer when it exists already
        run_args += ["--tokenizer-type", ctx.tokenizer_type, "--tokenizer-model", ctx.tokenizer]
    run_args += stage_flags(ctx.recipe, "mine")
    return [Py("seed", lambda: glue.concat_jsonl(seed, d / "seed.jsonl")),
            Tool("mine", "tools/mine_corpus.py", ["run", *run_args], sbatch=SBATCH.format("mine_corpus"),
                 sbatch_args=run_args),
            Py("corpus", lambda: glue.join_shards(d / "run" / "final", d / "corpus.jsonl"))]


def mine_metrics(ctx: Context, spec) -> dict:
    d = ctx.dir("mine")
    report = read_json(d / "run" / "report.json")
    its = report.get("iterations") or []
    out = glue.recall_metrics(mine_inputs(ctx, spec)[0], d / "corpus.jsonl")
    out.update(iterations=len(its), classifier_f1=its[-1]["classifier"]["f1"] if its else None,
               tokens=its[-1]["tokens_collected"] if its else None,
               duplicates_removed=sum((report.get("dedup") or {}).get("removed", {}).values()))
    return out


def decont_steps(ctx: Context, spec) -> list:
    d = ctx.dir("decontaminate")
    bench = ctx.resolve(spec.benchmarks, "benchmarks")
    return [Tool("decontaminate", "tools/decontaminate.py",
                 ["--input", ctx.resolve(spec.input, "corpus"), "--output", str(d / "corpus.jsonl"),
                  "--benchmarks", bench, "--report", str(d / "report.json"), "--action", spec.action,
                  *stage_flags(ctx.recipe, "decontaminate")])]


def decont_metrics(ctx: Context, spec) -> dict:
    d = ctx.dir("decontaminate")
    rep = read_json(d / "report.json")
    t = {k: 0 for k in ("documents", "documents_contaminated", "documents_dropped", "segments_removed",
                        "chars_in", "chars_out")}
    t.update(rep["totals"])      # counts: a key that never occurred is absent
    out = {"pages_in": t["documents"], "pages_cut": t["documents_contaminated"],
           "pages_dropped": t["documents_dropped"], "segments_removed": t["segments_removed"],
           "chars_removed": t["chars_in"] - t["chars_out"],
           "per_benchmark": {k: v["documents"] for k, v in rep.get("per_benchmark", {}).items()}}
    out.update(glue.planted_cut(Path(ctx.resolve(spec.input, "corpus")), d / "report.json"))
    return out


def decont_row(m: dict) -> tuple[str, str, str]:
    planted = ", ".join(f"{k} {v['cut']}/{v['in']}" for k, v in m.get("planted", {}).items())
    effect = f"cut {m['segments_removed']} lines in {m['pages_cut']} pages"
    if m.get("planted_in"):
        effect += f"; planted copies cut {m['planted_cut']}/{m['planted_in']} ({planted})"
    return f"{m['pages_in']} pages", f"{m['pages_in'] - m['pages_dropped']} pages", effect


def preprocess_steps(ctx: Context, spec) -> list:
    d = ctx.dir("preprocess")
    corpus = ctx.resolve(spec.input, "corpus")
    tok = ctx.recipe.tokenizer
    steps = []
    if tok.trained:
        steps.append(Tool("tokenizer", "tools/train_tokenizer.py",
                          ["--input", corpus, "--type", tok.train_type, "--vocab-size", str(tok.vocab_size),
                           "--max-chars", str(tok.max_chars), "--output", str(d / "tokenizer")]))
    kind = {"hf": "HuggingFaceTokenizer", "sentencepiece": "SentencePieceTokenizer"}.get(tok.type, tok.type)
    args = ["--input", corpus, "--output-prefix", str(d / "corpus"), "--tokenizer-type", kind]
    args += ["--tokenizer-model", ctx.tokenizer] if ctx.tokenizer else []
    steps.append(Tool("tokenize", "tools/preprocess_data.py",
                      args + ["--progress", "false", *stage_flags(ctx.recipe, "preprocess")]))
    return steps


def preprocess_metrics(ctx: Context, spec) -> dict:
    side = read_json(ctx.dir("preprocess") / "corpus_text_document.json")
    tok = side.get("tokenizer") or {}
    return {"documents": side.get("documents", side.get("num_documents")), "tokens": side.get("tokens"),
            "tokenizer": tok.get("kind"), "vocab_size": tok.get("vocab_size"),
            "fingerprint": (tok.get("fingerprint") or "")[:12]}


def preprocess_row(m: dict) -> tuple[str, str, str]:
    return (f"{m['documents']} pages", f"{m['tokens']:,} tokens",
            f"tokenizer {m['tokenizer']} vocab {m['vocab_size']} ({m['fingerprint']})")


# ---------------------------------------------------------------------------
# training stages


def train_step(ctx: Context, name: str, tool: str, extra: list[str], load_from: str,
               sbatch: str | None, env: dict | None = None) -> Train:
    spec, d = ctx.recipe.stages[name], ctx.dir(name)
    save = d / "ckpt"
    args = [*_model_flags(ctx), *stage_flags(ctx.recipe, name), *extra, "--save", str(save),
            "--log-json", str(d / "log.jsonl"), *_start(save, load_from)]
    senv = {"SAVE_DIR": str(save), **(env or {})}
    if spec.config:
        senv["CONFIG"] = spec.config
    return Train("train", tool, args, nodes=spec.nodes, nproc=spec.gpus_per_node,
                 sbatch=SBATCH.format(sbatch) if sbatch else None, env=senv)


def pretrain_steps(ctx: Context, spec) -> list:
    data = ctx.resolve(spec.data, "prefix")
    flag = ["--mixture", data] if data.endswith((".yaml", ".yml")) else ["--data-path", data]
    step = train_step(ctx, "pretrain", "tools/pretrain.py", flag, spec.load, "pretrain_dsm",
                      {} if flag[0] == "--mixture" else {"DATA_PATH": data})
    return [step, *_measures(ctx, "pretrain", spec, ("worksheet", "instruct"))]


def sft_steps(ctx: Context, spec) -> list:
    d = ctx.dir("sft")
    data = ctx.resolve(spec.data, "sft")
    prefix = str(d / "data")
    steps = []
    if data.endswith((".jsonl", ".jsonl.gz", ".json")):
        build = checked_args(spec.build_args, (SFTDataConfig,), ctx.recipe.where("stages.sft.build_args"),
                             ("input", "output_prefix", "tokenizer_type", "tokenizer_model"))
        seq = ctx.recipe.model.get("seq_length")
        if seq and "seq_length" not in build:
            build["seq_length"] = seq
        steps.append(Tool("data", "tools/build_sft_data.py",
                          ["--input", data, "--output-prefix", prefix, *_tok_flags(ctx),
                           *to_flags(build, (SFTDataConfig,))]))
    else:
        prefix = data
    steps.append(train_step(ctx, "sft", "tools/sft.py", ["--data-path", prefix],
                            ctx.resolve(spec.load, "checkpoint"), "sft_dsm", {"DATA_PATH": prefix}))
    return steps + _measures(ctx, "sft", spec, ("instruct",))


def rm_steps(ctx: Context, spec) -> list:
    d = ctx.dir("reward_model")
    policy = ctx.resolve(spec.load, "checkpoint")
    steps = []
    train_data, valid_data = spec.data, ""
    if not spec.data:
        questions = ctx.resolve(spec.questions, "rm_questions")
        steps += [Py("questions", lambda: glue.benchmark_config("recipe_rm", questions, d / "benchmarks.yaml")),
                  Tool("sample", "tools/evaluate.py",
                       ["--benchmarks", "recipe_rm", "--benchmark-config", str(d / "benchmarks.yaml"),
                        "--backend", "megatron", "--checkpoint", policy, "--tokenizer", ctx.tokenizer,
                        "--style", "instruct", "--n-samples", str(spec.samples),
                        "--temperature", str(spec.temperature), "--max-new-tokens", str(spec.max_new_tokens),
                        "--batch-size", "100", "--output", str(d / "samples.jsonl"),
                        "--metrics", str(d / "samples_metrics.json")]),
                  Py("records", lambda: glue.orm_records(d / "samples.jsonl", questions, d,
                                                         spec.valid_fraction))]
        train_data, valid_data = str(d / "orm_train.jsonl"), str(d / "orm_valid.jsonl")
    extra = ["--rm-type", "outcome", "--train-data", train_data, *_tok_flags(ctx)]
    extra += ["--valid-data", valid_data] if valid_data else []
    steps.append(train_step(ctx, "reward_model", "tools/train_reward_model.py", extra, policy, None))
    return steps


def rl_steps(ctx: Context, spec) -> list:
    questions = ctx.resolve(spec.questions, "train")
    extra = ["--task", questions, "--reward", spec.reward, *_tok_flags(ctx)]
    if spec.heldout_questions:
        extra += ["--heldout-task", ctx.resolve(spec.heldout_questions, "heldout")]
    if spec.reward == "orm":
        extra += ["--reward-model", ctx.resolve(spec.reward_model, "checkpoint")]
    step = train_step(ctx, "rl", "tools/grpo.py", extra, ctx.resolve(spec.load, "checkpoint"), "grpo_dsm",
                      {"DATA_PATH": questions})
    return [step, *_measures(ctx, "rl", spec, ("instruct",))]


def eval_steps(ctx: Context, spec) -> list:
    d = ctx.dir("evaluate")
    benches = list(spec.benchmarks)
    steps = []
    args = ["--backend", "megatron", "--checkpoint", ctx.resolve(spec.load, "checkpoint"),
            "--tokenizer", ctx.tokenizer, "--output", str(d / "generations.jsonl"),
            "--metrics", str(d / "metrics.json")]
    if "arith_heldout" in benches:
        heldout = str(ctx.task_file("heldout"))
        steps.append(Py("benchmarks", lambda: glue.benchmark_config("arith_heldout", heldout,
                                                                   d / "benchmarks.yaml")))
        args += ["--benchmark-config", str(d / "benchmarks.yaml")]
    steps.append(Tool("evaluate", "tools/evaluate.py",
                      ["--benchmarks", *benches, *args, *stage_flags(ctx.recipe, "evaluate")]))
    return steps


_TRAIN = (TrainConfig, ModelConfig)
_EVAL_RESERVED = ("benchmarks", "output", "backend", "checkpoint", "model", "tokenizer", "generations",
                  "benchmark_config", "metrics")

for _kind in (
    Kind("mine", (MiningConfig, ClassifierConfig, ExecutorConfig, DedupConfig),
         ("input", "seed_positives", "negatives", "output", "executor", "tokenizer_type", "tokenizer_model"),
         {}, mine_steps, mine_metrics, mine_row, uses_tokenizer=False),
    Kind("decontaminate", (DecontConfig,), (), {"input": "corpus", "benchmarks": "benchmarks"}, decont_steps,
         decont_metrics, decont_row, uses_tokenizer=False),
    Kind("preprocess", (PreprocessConfig,), ("input", "output_prefix", "tokenizer_type", "tokenizer_model"),
         {"input": "corpus"}, preprocess_steps, preprocess_metrics, preprocess_row),
    Kind("pretrain", _TRAIN, TRAIN_RESERVED, {"data": "prefix", "load": "checkpoint"}, pretrain_steps,
         pretrain_metrics, train_row, plan_stage="pretrain"),
    Kind("sft", (*_TRAIN, SFTConfig), TRAIN_RESERVED, {"data": "sft", "load": "checkpoint"}, sft_steps,
         sft_metrics, train_row, plan_stage="sft"),
    Kind("reward_model", (*_TRAIN, RMConfig),
         TRAIN_RESERVED + ("rm_type", "train_data", "valid_data", "tokenizer_type", "tokenizer_model"),
         {"load": "checkpoint", "questions": "rm_questions"}, rm_steps, rm_metrics, train_row, plan_stage="rm"),
    Kind("rl", (*_TRAIN, RLConfig),
         TRAIN_RESERVED + ("task", "heldout_task", "reward", "reward_model", "tokenizer_type", "tokenizer_model"),
         {"load": "checkpoint", "questions": "train", "heldout_questions": "heldout",
          "reward_model": "checkpoint"}, rl_steps, rl_metrics, train_row, plan_stage="rl"),
    Kind("evaluate", (EvalConfig,), _EVAL_RESERVED, {"load": "checkpoint"}, eval_steps, eval_metrics,
         train_row),
):
    register(_kind)

