"""Megatron-format log lines, TensorBoard and optional Weights & Biases.

The line format is a contract (DESIGN.md); scripts and tests parse it:
`` iteration       10/     100 | consumed samples: 320 | ... | lm loss: 5.123456E+00 | ...``
"""

from __future__ import annotations

import json
import re
from pathlib import Path


def format_value(key: str, v) -> str:
    """One field's value as the log line writes it (losses in E notation)."""
    if not isinstance(v, float):
        return str(v)
    if key.endswith("loss"):
        return f"{v:.6E}"
    if key == "learning rate":
        return f"{v:.3E}"
    if key.startswith("elapsed time"):
        return f"{v:.1f}"
    if key == "tokens per second":
        return f"{v:.0f}"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"


def format_fields(fields: dict) -> str:
    """`` key: value | key: value |`` (the part after the iteration)."""
    return "".join(f" {k}: {format_value(k, v)} |" for k, v in fields.items())


def format_line(iteration: int, train_iters: int, fields: dict) -> str:
    return f" iteration {iteration:8d}/{train_iters:8d} |" + format_fields(fields)


_LINE = re.compile(r"iteration\s+(\d+)/\s*(\d+) \|(.*)")


def parse_line(line: str) -> dict | None:
    """Inverse of format_line (numbers as floats). None for other lines."""
    m = _LINE.search(line)
    if not m:
        return None
    out = {"iteration": int(m.group(1)), "train_iters": int(m.group(2))}
    for part in m.group(3).split("|"):
        if ":" not in part:
            continue
        k, v = part.split(":", 1)
        try:
            out[k.strip()] = float(v.strip())
        except ValueError:
            out[k.strip()] = v.strip()
    return out


class MetricsWriter:
    """Writes one record per log interval to stdout, TensorBoard, W&B, JSONL."""

    def __init__(self, *, enabled: bool, tensorboard_dir: str | None = None,
                 wandb_project: str | None = None, json_path: str | None = None,
                 run_config: dict | None = None):
        self.enabled = enabled
        self.tb = None
        self.wandb = None
        self.json_path = json_path
        if not enabled:
            return
        if tensorboard_dir:
            # optional dependency: torch's writer needs the tensorboard package
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=tensorboard_dir)
        if wandb_project:
            try:
                import wandb  # optional dependency, only with --wandb-project
            except ImportError:
                raise RuntimeError("--wandb-project needs the `wandb` package (pip install wandb)") from None
            self.wandb = wandb.init(project=wandb_project, config=run_config or {})
        if json_path:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)

    def log(self, iteration: int, train_iters: int, fields: dict) -> None:
        if not self.enabled:
            return
        print(format_line(iteration, train_iters, fields), flush=True)
        numeric = {k: v for k, v in fields.items() if isinstance(v, (int, float))}
        if self.tb is not None:
            for k, v in numeric.items():
                self.tb.add_scalar(k, v, iteration)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(numeric, step=iteration)
        if self.json_path:
            with open(self.json_path, "a") as f:
                f.write(json.dumps({"iteration": iteration, **numeric}) + "\n")

    def text(self, msg: str) -> None:
        if self.enabled:
            print(msg, flush=True)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
