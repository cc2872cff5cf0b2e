"""The decontamination stage as a datatrove pipeline step."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from megatron_dsm.config import ConfigError
from megatron_dsm.mining.decontaminate.clean import Decontaminator
from megatron_dsm.mining.decontaminate.index import BenchmarkIndex, DecontConfig
from megatron_dsm.mining.decontaminate.report import DecontReport

try:  # datatrove is the mining engine; the rest of the package works without it.
    from datatrove.data import Document, DocumentsPipeline
    from datatrove.pipeline.base import PipelineStep
except ImportError:  # pragma: no cover - datatrove is in requirements.txt
    PipelineStep = object  # type: ignore[assignment,misc]


class BenchmarkDecontamination(PipelineStep):
    """datatrove step: remove contaminated segments from ``Document.text``.

    Documents whose every segment is contaminated are dropped.  Counts go to
    datatrove stats (``documents_contaminated``, ``segments_removed``,
    ``contaminated_<benchmark>``, ``documents_dropped``); with
    ``report_folder`` each rank also writes ``decontamination_<rank>.json``.
    The index is built once per worker process from ``benchmarks_dir``.
    """

    type = "🦠 - DECONT"
    name = "🧮 benchmark 10-grams (DeepSeekMath rule)"

    def __init__(self, benchmarks_dir: str | Path, config: DecontConfig | None = None,
                 report_folder: str | Path | None = None, batch_docs: int = 1000):
        super().__init__()
        self.benchmarks_dir = str(benchmarks_dir)
        self.config = config or DecontConfig()
        self.report_folder = str(report_folder) if report_folder else None
        self.batch_docs = batch_docs
        if not Path(self.benchmarks_dir).is_dir():
            raise ConfigError(f"benchmarks folder not found: {self.benchmarks_dir}")
        self._core: Decontaminator | None = None

    @property
    def core(self) -> Decontaminator:
        if self._core is None:
            self._core = Decontaminator(BenchmarkIndex.from_dir(self.benchmarks_dir, self.config), self.config)
        return self._core

    def run(self, data: "DocumentsPipeline", rank: int = 0, world_size: int = 1) -> "DocumentsPipeline":
        if data is None:
            return
        core = self.core
        report = DecontReport(core.index, self.config.max_hits_listed)
        batch: list[Document] = []
        for doc in data:
            batch.append(doc)
            if len(batch) >= self.batch_docs:
                yield from self._process(core, batch, report)
                batch = []
        if batch:
            yield from self._process(core, batch, report)
        if self.report_folder:
            report.write(Path(self.report_folder) / f"decontamination_{rank:05d}.json")

    def _process(self, core: Decontaminator, docs: list, report: DecontReport) -> Iterator:
        results = core.clean_batch([d.text for d in docs])
        for doc, res in zip(docs, results):
            self.stat_update("documents")
            dropped = res.contaminated and not res.text.strip()
            report.add(doc.id, res, len(doc.text), dropped)
            if res.contaminated:
                benches = sorted({core.index.texts[h.text_index].benchmark for h in res.hits})
                self.stat_update("documents_contaminated")
                self.stat_update("segments_removed", value=len(res.removed))
                for b in benches:
                    self.stat_update(f"contaminated_{b}")
                doc.metadata["decontamination"] = {"segments_removed": len(res.removed), "benchmarks": benches}
                if dropped:
                    self.stat_update("documents_dropped")
                    continue
                doc.text = res.text
            yield doc
