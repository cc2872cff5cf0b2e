"""The evaluation run: benchmarks -> prompts -> generations -> grades -> metrics.

One record per problem is appended to the output file as soon as it is
graded, so an interrupted run resumes where it stopped (problems already in
the file are skipped).  Metrics (JSON), a printed table and, with several
samples per problem, the maj@k / pass@k plot are written at the end.
tools/evaluate.py is the command line for it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from megatron_dsm.config import ConfigError, field, options
from megatron_dsm.eval import benchmarks, grading, metrics, prompts
from megatron_dsm.eval.generation import make_generator
from megatron_dsm.eval.sandbox import SandboxPool
from megatron_dsm.io import atomic_write, read_jsonl


@options
class EvalConfig:
    benchmarks: list[str] = field(default_factory=lambda: ["gsm8k"], help="benchmark names")
    output: str = field("runs/eval/generations.jsonl", help="per-problem records (jsonl; resumable)")
    backend: str = field("jsonl", help="generation back end (jsonl, hf, or a registered one)")
    model: str = field("", help="model path / name for model back ends")
    checkpoint: str = field("", help="training-loop checkpoint folder (backend megatron)")
    tokenizer: str = field("", help="tokenizer.json / folder / .model (backend megatron; hf: override)")
    generations: str = field("", help="jsonl of existing generations (backend jsonl)")
    style: str = field("instruct", help="prompt style", choices=("instruct", "fewshot", "pot", "tool"))
    n_samples: int = field(1, help="samples per problem (first is greedy when temperature is 0)")
    temperature: float = field(0.0, help="sampling temperature (paper: 0.7 for maj@k/pass@k)")
    top_p: float = field(1.0, help="nucleus sampling p")
    max_new_tokens: int = field(512, help="generation length")
    batch_size: int = field(8, help="prompts per generate call")
    limit: int = field(0, help="first N problems per benchmark (0 = all)")
    data_root: str = field("", help="data folder holding benchmarks/ (default ../shared/data)")
    benchmark_config: str = field("", help="YAML with user jsonl benchmarks under 'benchmarks:'")
    grader: str = field("dsm", help="answer grader", choices=("dsm", "math_verify"))
    tool_rounds: int = field(4, help="max code executions per problem (style tool)")
    exec_timeout: float = field(10.0, help="sandbox wall-clock seconds per program")
    metrics: str = field("", help="metrics JSON path (default: OUTPUT.metrics.json)")
    plot: str = field("", help="PNG of maj@k/pass@k vs k (default: OUTPUT.k.png when n>1)")

    def __post_init__(self):
        if self.n_samples < 1:
            raise ConfigError(f"--n-samples must be >= 1, got {self.n_samples}")
        if self.n_samples > 1 and self.temperature == 0.0:
            raise ConfigError("--n-samples > 1 needs --temperature > 0 (greedy samples are identical)")
        if self.backend == "jsonl" and not self.generations:
            raise ConfigError("--backend jsonl needs --generations FILE")
        if self.backend == "megatron" and not (self.checkpoint or self.model):
            raise ConfigError("--backend megatron needs --checkpoint DIR")
        if self.backend not in ("jsonl", "megatron") and not self.model:
            raise ConfigError(f"--backend {self.backend} needs --model")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")


def _done_ids(path: Path) -> set[tuple[str, str]]:
    done = set()
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue        # a line cut by the interruption: redo that problem
                done.add((r["benchmark"], str(r["id"])))
    return done


def _truncate_partial_line(path: Path) -> None:
    """Drop a trailing incomplete line left by a killed run."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        atomic_write(path, data[:data.rfind(b"\n") + 1])


def grade_problem(p, completions: list[str], cfg: EvalConfig, execute=None) -> dict:
    answers, correct = [], []
    for c in completions:
        if cfg.style == "pot":
            ans = prompts.run_pot(c, execute, cfg.exec_timeout)
            ok = ans is not None and grading.is_equiv(ans, p.answer)
        elif p.kind == "choice":
            multi = len(str(p.answer)) > 1
            ans = grading.extract_choices(c) if multi else grading.extract_choice(c)
            ok = ans == str(p.answer).strip().upper()
        else:
            ans = grading.extract_answer(c)
            ok = grading.grade(c, p.answer, grader=cfg.grader)
        answers.append(grading.normalize_answer(ans) if ans is not None else None)
        correct.append(bool(ok))
    return {"benchmark": p.benchmark, "id": p.id, "answer": p.answer, "subject": p.subject,
            "level": p.level, "completions": completions, "answers": answers, "correct": correct}


def run(cfg: EvalConfig, generator=None) -> dict:
    """Evaluate ``cfg.benchmarks``; returns the metrics summary (also written
    and printed).  ``generator`` replaces the back end ``cfg`` names."""
    if cfg.benchmark_config:
        benchmarks.register_from_config(cfg.benchmark_config)
    problems = []
    for b in cfg.benchmarks:   # load all first: bad names fail before any generation
        problems += benchmarks.load_benchmark(b, cfg.data_root or None, cfg.limit or None)
    if generator is None:
        generator = _make_generator(cfg)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    _truncate_partial_line(out)
    done = _done_ids(out)
    todo = [p for p in problems if (p.benchmark, str(p.id)) not in done]
    pool = SandboxPool() if cfg.style in ("pot", "tool") else None
    execute = None
    if pool is not None:
        execute = lambda code, timeout: pool.submit(code, timeout).result()  # noqa: E731
    try:
        _generate_and_grade(cfg, generator, todo, out, execute)
    finally:
        if pool is not None:
            pool.close()
    return _summarize(cfg, out, problems)


def _make_generator(cfg: EvalConfig):
    gkw = {"path": cfg.generations} if cfg.backend == "jsonl" else {"model": cfg.model}
    if cfg.backend == "megatron":
        # registers "megatron"; loaded only for that back end, as it needs torch
        # and megatron-core, which replaying or grading generations does not
        import megatron_dsm.eval.megatron_backend  # noqa: F401
        gkw = {"checkpoint": cfg.checkpoint or cfg.model, "tokenizer": cfg.tokenizer or None}
    elif cfg.tokenizer:
        gkw["tokenizer"] = cfg.tokenizer
    return make_generator(cfg.backend, **gkw)


def _generate_and_grade(cfg: EvalConfig, generator, todo: list, out: Path, execute) -> None:
    """Generate for ``todo`` batch by batch and append each graded record.

    Appended line by line rather than written atomically: a killed run keeps
    every problem graded so far and the next run resumes after them.
    """
    with open(out, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc="evaluate",
                                                     unit="problem", initial=0) as bar:
        for i in range(0, len(todo), cfg.batch_size):
            batch = todo[i:i + cfg.batch_size]
            for p, cs in zip(batch, _completions(cfg, generator, batch, execute)):
                rec = grade_problem(p, cs, cfg, execute)
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            bar.update(len(batch))


def _completions(cfg: EvalConfig, generator, batch: list, execute) -> list[list[str]]:
    """``cfg.n_samples`` completions per problem of ``batch``."""
    style = cfg.style
    texts = [prompts.build_prompt(p, style) for p in batch]
    stop = prompts.stops_for(batch[0], style)
    gen_kw = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    if cfg.backend == "jsonl" and hasattr(generator, "generate_for_ids") and \
            all(str(p.id) in generator.by_id for p in batch):
        return generator.generate_for_ids([p.id for p in batch], n=cfg.n_samples, stop=None)
    if style == "tool":
        comps = [[] for _ in batch]
        for _ in range(cfg.n_samples):
            one = prompts.tool_integrated(
                texts, generator.as_callable(stop=["```output"] + stop, **gen_kw),
                execute, max_rounds=cfg.tool_rounds, timeout=cfg.exec_timeout)
            for c, t in zip(comps, one):
                c.append(t)
        return comps
    return generator.generate(texts, n=cfg.n_samples, stop=stop, **gen_kw)


def _summarize(cfg: EvalConfig, out: Path, problems: list) -> dict:
    """Metrics over this run's problems in ``out``: written, printed, plotted."""
    wanted = {(p.benchmark, str(p.id)) for p in problems}
    records = [r for _, r in read_jsonl(out) if (r["benchmark"], str(r["id"])) in wanted]
    summary = metrics.summarize(records, same=lambda a, b: grading.is_equiv(a, b))
    mpath = cfg.metrics or str(out) + ".metrics.json"
    metrics.write_json(summary, mpath)
    print(metrics.format_table(summary))
    print(f"metrics: {mpath}")
    if cfg.n_samples > 1:
        ppath = cfg.plot or str(out) + ".k.png"
        metrics.plot_k_curves(summary, ppath)
        print(f"plot: {ppath}")
    return summary
