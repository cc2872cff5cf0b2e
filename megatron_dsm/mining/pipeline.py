"""datatrove pipeline steps for mining, and the executors that run them.

Stages (each a list of datatrove ``PipelineStep`` run by one executor):

* extract: ``WarcPageReader`` / ``JsonlPageReader`` -> :class:`ExtractText`
  -> ``JsonlWriter``  (pages with math-preserving text, language, domain;
  one output file per input file, named by its position in the input list);
* dedup:   URL, exact-text and MinHash stages (:mod:`dedup`);
* score:   ``JsonlReader`` -> :class:`ScorePages` -> ``JsonlWriter``
  (every page with ``score``, candidates with ``tokens``; each task also
  writes a small id/score/tokens/chars/url/title index used for global
  selection);
* keep:    ``JsonlReader`` -> :class:`KeepIds` -> ``JsonlWriter``
  (recalled pages; also used to pull seed-expansion pages).

Every stage runs under datatrove's ``LocalPipelineExecutor`` (default) or
``SlurmPipelineExecutor``; the same step objects are pickled to the workers.
A stage writes into ``<out>.partial/`` and the folder is renamed to ``<out>/``
only once every task has completed, so a folder without ``.partial`` is
always whole; datatrove's per-task completion markers make a rerun skip
finished tasks.  Output shards are ``jsonl.gz`` with metadata expanded to top
level (``text``, ``id``, ``url``, ``score`` ...), readable by any jsonl reader.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Sequence

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from megatron_dsm.config import ConfigError, field, options
from megatron_dsm.io import replace_dir
from megatron_dsm.mining.domains import domain_of


class ExtractText(PipelineStep):
    """HTML pages -> text with math kept; text pages -> delimiters normalised. Adds lang and domain."""

    name = "math-preserving extraction"
    type = "EXTRACTOR"

    def __init__(self, detect_language: bool = True):
        super().__init__()
        self.detect_language = detect_language

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from megatron_dsm.mining.html_to_text import (
            detect_language,
            html_to_text,
            normalise_delimiters,
        )

        for doc in data:
            self.stat_update("pages_in")
            meta = doc.metadata
            fmt = meta.pop("format", "text")
            with self.track_time():
                if fmt == "html":
                    ex = html_to_text(doc.text, url=meta.get("url"), with_lang=self.detect_language)
                    text = ex.text
                    if ex.title and not meta.get("title"):
                        meta["title"] = ex.title
                    if ex.math_count:
                        meta["math_elements"] = ex.math_count
                    if ex.lang:
                        meta["lang"], meta["lang_score"] = ex.lang, ex.lang_score
                else:
                    text = normalise_delimiters(doc.text).strip()
                    if text and self.detect_language:
                        meta["lang"], meta["lang_score"] = detect_language(text)
            if not text:
                self.stat_update("skipped_empty_after_extraction")
                continue
            doc.text = text
            meta["source_format"] = fmt
            meta["domain"] = domain_of(meta.get("url"))
            self.stat_update("pages_out")
            yield doc


_MODELS: dict = {}


class ScorePages(PipelineStep):
    """Score every page with the classifier (batched fastText calls); store ``score``, and ``tokens`` for the
    pages ``counting`` selects (recall.TokenCounting: candidates, or a sample of them).

    Writes ``index_folder/<rank>.tsv`` (id, score, tokens, chars, url, title) when the task's input is done.
    """

    name = "fastText recall scoring"
    type = "SCORER"

    def __init__(self, model_path: str, index_folder: str | None = None, batch_size: int = 256,
                 counting=None):
        super().__init__()
        self.model_path = str(model_path)
        self.index_folder = index_folder
        self.batch_size = batch_size
        self.counting = counting

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from megatron_dsm.mining.classifier import MathClassifier
        from megatron_dsm.mining.recall import NOT_COUNTED, IndexRow, TokenCounting, write_index

        # loaded in the worker (fastText models do not pickle), once per process: a worker running several
        # tasks, or a long-lived process, does not pay the load (seconds for a 2 GB model) again
        st = os.stat(self.model_path)
        key = (self.model_path, st.st_mtime_ns, st.st_size)  # a retrained file at the same path is reloaded
        clf = _MODELS.get(key)
        if clf is None:
            clf = _MODELS[key] = MathClassifier.load(self.model_path)
        counting = self.counting or TokenCounting()
        index: list = []
        batch: list = []

        def flush():
            with self.track_time():
                scores = clf.score_batch([d.text for d in batch])
                todo = [i for i, (d, s) in enumerate(zip(batch, scores)) if counting.wanted(d.id, s)]
                counts = dict(zip(todo, counting.count([batch[i].text for i in todo])))
            for i, (d, s) in enumerate(zip(batch, scores)):
                d.metadata["score"] = round(s, 6)
                n = counts.get(i, NOT_COUNTED)
                if n != NOT_COUNTED:
                    d.metadata["tokens"] = n
                    self.stat_update("pages_token_counted")
                if self.index_folder:
                    index.append(IndexRow(d.id, s, n, len(d.text), d.metadata.get("url") or "",
                                          d.metadata.get("title") or ""))
                self.stat_update("pages_scored")
            out = list(batch)
            batch.clear()
            return out

        for doc in data:
            batch.append(doc)
            if len(batch) >= self.batch_size:
                yield from flush()
        if batch:
            yield from flush()
        if self.index_folder:
            write_index(Path(self.index_folder) / f"{rank:05d}.tsv", index)


class KeepIds(PipelineStep):
    """Pass only documents whose id is listed in ``ids_file`` (one id a line)."""

    name = "keep listed ids"
    type = "FILTER"

    def __init__(self, ids_file: str, mark: str | None = None):
        super().__init__()
        self.ids_file = str(ids_file)
        self.mark = mark

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from megatron_dsm.mining.recall import read_ids

        keep = read_ids(self.ids_file)
        for doc in data:
            if doc.id in keep:
                if self.mark:
                    doc.metadata[self.mark] = True
                self.stat_update("kept")
                yield doc
            else:
                self.stat_update("dropped")


# --------------------------------------------------------------------------
# executors


@options
class ExecutorConfig:
    executor: str = field("local", help="datatrove executor", choices=("local", "slurm"))
    tasks: int = field(1, help="datatrove tasks per stage (input files are sharded over tasks)")
    workers: int = field(1, help="local executor: tasks run at once (1 runs in this process)")
    compression: str = field("gzip", help="output shard compression", choices=("gzip", "none"))
    slurm_partition: str = field("", help="slurm executor: partition")
    slurm_time: str = field("24:00:00", help="slurm executor: time limit per task")
    slurm_cpus_per_task: int = field(1, help="slurm executor: CPUs per task")
    slurm_mem_per_cpu_gb: int = field(2, help="slurm executor: memory per CPU (GB)")
    slurm_poll_s: float = field(30.0, help="slurm executor: seconds between checks that a stage finished")

    def __post_init__(self):
        if self.executor not in ("local", "slurm"):
            raise ConfigError(f"executor must be local or slurm, got {self.executor!r}")
        if self.tasks < 1 or self.workers < 1:
            raise ConfigError(f"tasks and workers must be >= 1, got tasks={self.tasks} workers={self.workers}")
        if self.compression not in ("gzip", "none"):
            raise ConfigError(f"compression must be gzip or none, got {self.compression!r}")
        if self.executor == "slurm" and not self.slurm_partition:
            raise ConfigError("--executor slurm needs --slurm-partition")


def make_executor(pipeline: Sequence[PipelineStep], logging_dir: str | Path, cfg: ExecutorConfig, job_name: str,
                  tasks: int | None = None, mem_per_cpu_gb: int | None = None):
    """``mem_per_cpu_gb`` overrides the config's for one stage (the one-task MinHash clustering holds every
    duplicate pair of the corpus)."""
    tasks = tasks or cfg.tasks
    if cfg.executor == "slurm":
        from datatrove.executor.slurm import SlurmPipelineExecutor

        return SlurmPipelineExecutor(
            pipeline=list(pipeline), tasks=tasks, time=cfg.slurm_time, partition=cfg.slurm_partition,
            cpus_per_task=cfg.slurm_cpus_per_task, mem_per_cpu_gb=mem_per_cpu_gb or cfg.slurm_mem_per_cpu_gb,
            job_name=job_name, logging_dir=str(logging_dir), skip_completed=True)
    from datatrove.executor.local import LocalPipelineExecutor

    return LocalPipelineExecutor(pipeline=list(pipeline), tasks=tasks, workers=min(cfg.workers, tasks),
                                 logging_dir=str(logging_dir), skip_completed=True)


class StageError(RuntimeError):
    """A pipeline stage that could not be submitted or did not complete."""


def run_stage(name: str, out_dir: Path, build, logs_dir: Path, cfg: ExecutorConfig,
              tasks: int | None = None, mem_per_cpu_gb: int | None = None) -> Path:
    """Run one stage unless ``out_dir`` is already complete; returns ``out_dir``.

    ``build(partial_dir)`` returns the pipeline writing into ``partial_dir``.
    With Slurm, this waits (polling datatrove's completion markers) so the
    driver can read the stage's output before the next one, until every task
    has completed or the job array has left the queue with some tasks failed;
    then it stops with the tasks that did not complete, and running the same
    command again runs only those (datatrove skips completed tasks).
    """
    out_dir = Path(out_dir)
    if out_dir.is_dir():
        return out_dir
    partial = out_dir.with_name(out_dir.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    ex = make_executor(build(partial), Path(logs_dir) / name, cfg, job_name=name, tasks=tasks,
                       mem_per_cpu_gb=mem_per_cpu_gb)
    try:
        ex.run()
    except subprocess.CalledProcessError as e:  # datatrove's sbatch call; Slurm said why on stderr
        raise StageError(f"stage {name}: sbatch refused its job array (exit {e.returncode}, Slurm's "
                         f"message is above); launch script: {logs_dir}/{name}/launch_script.slurm") from None
    while cfg.executor == "slurm" and ex.get_incomplete_ranks() and slurm_job_queued(ex.job_id):
        time.sleep(cfg.slurm_poll_s)
    incomplete = ex.get_incomplete_ranks()
    if incomplete:
        raise StageError(f"stage {name}: {len(incomplete)} task(s) did not complete ({incomplete[:10]}); their logs "
                         f"are in {logs_dir}/{name}; run the same command again to redo only those")
    return replace_dir(partial, out_dir)


def slurm_job_queued(job_id) -> bool:
    """Whether any task of Slurm job ``job_id`` is still pending or running (squeue lists no finished job; once
    Slurm forgets the job, squeue fails, which means the same)."""
    if job_id in (None, -1):
        return False
    p = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True)
    return p.returncode == 0 and bool(p.stdout.strip())


def jsonl_writer(folder: Path, compression: str = "gzip", name: str = "${rank}"):
    """Shards ``<name>.jsonl.gz`` (or ``.jsonl`` with compression "none"); ``name`` is a datatrove template
    (``${rank}``, or a metadata key such as ``${page_shard}``)."""
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    gz = compression == "gzip"
    return JsonlWriter(str(folder), output_filename=name + ".jsonl" + (".gz" if gz else ""),
                       compression="gzip" if gz else None, expand_metadata=True)


def stage_stats(logging_dir: Path) -> list[dict[str, float]]:
    """Per pipeline step, each stat's total summed over the stage's tasks (datatrove's ``stats/<rank>.json``,
    written by every task under both executors)."""
    steps: list[dict[str, float]] = []
    for p in sorted((Path(logging_dir) / "stats").glob("*.json")):
        for i, step in enumerate(json.loads(p.read_text())):
            if i == len(steps):
                steps.append({})
            for k, v in step.get("stats", {}).items():
                v = v.get("total", 0) if isinstance(v, dict) else v
                steps[i][k] = steps[i].get(k, 0) + v
    return steps


def jsonl_reader(folder: Path, **kw):
    from datatrove.pipeline.readers.jsonl import JsonlReader

    return JsonlReader(str(folder), glob_pattern="*.jsonl*", **kw)


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
