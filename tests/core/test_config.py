"""Config validation is one place for YAML, the command line and Python:
choices, types and ranges, unknown keys, and one ``error:`` line each."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_dsm.config import (ConfigError, check_value, checked_values, field, from_namespace,
                                 load_yaml, options)

REPO = Path(__file__).resolve().parents[2]


@options
class Opts:
    mode: str = field("fast", choices=("fast", "slow"))
    rate: float = field(0.1, min=0.0, max=1.0)
    steps: int = field(3, min=1)
    flag: bool = field(False)
    names: list[str] = field(default_factory=list)
    pair: tuple[float, ...] = field((0.5, 0.25))
    limit: int | None = field(None)

    def __post_init__(self):
        if self.steps > 100 and self.mode == "fast":
            raise ConfigError("Opts: fast mode takes at most 100 steps")


def test_python_construction_is_validated():
    with pytest.raises(ConfigError, match=r"Opts.mode: 'FAST' is not one of fast, slow \(did you mean 'fast'\?\)"):
        Opts(mode="FAST")
    with pytest.raises(ConfigError, match=r"Opts.rate: must be <= 1.0, got 2.0"):
        Opts(rate=2.0)
    with pytest.raises(ConfigError, match=r"Opts.steps: expected a whole number, got 2.5"):
        Opts(steps=2.5)
    with pytest.raises(ConfigError, match=r"Opts.flag: expected true or false, got 3"):
        Opts(flag=3)
    with pytest.raises(ConfigError, match="at most 100 steps"):   # the class's own check still runs
        Opts(steps=101)
    o = Opts(rate="1e-1", steps="4", names="a", pair=[1, 2], limit=None)
    assert (o.rate, o.steps, o.names, o.pair) == (0.1, 4, ["a"], (1.0, 2.0))
    assert dataclasses.replace(o, steps=5).steps == 5


def test_check_value_converts_or_names_the_key():
    assert check_value(Opts, "flag", "yes") is True
    with pytest.raises(ConfigError, match=r"--rate: expected a number, got 'fast'"):
        check_value(Opts, "rate", "fast", "--rate")
    with pytest.raises(ConfigError, match=r"Opts.steps: a value is required, got null"):
        check_value(Opts, "steps", None)


def test_yaml_errors_name_file_and_key(tmp_path):
    y = tmp_path / "r.yaml"
    y.write_text("opts:\n  mode: slow\n  rate: oops\n")
    with pytest.raises(ConfigError, match=r"r.yaml: opts.rate: expected a number, got 'oops'"):
        from_namespace(Opts, {}, load_yaml(y, "opts"))
    y.write_text("opts:\n  mdoe: slow\n")
    with pytest.raises(ConfigError, match=r"r.yaml: opts.mdoe: unknown option \(did you mean 'mode'\?\)"):
        from_namespace(Opts, {}, load_yaml(y, "opts"))
    # the command line wins over YAML and is checked under its flag name
    y.write_text("opts:\n  mode: slow\n")
    assert checked_values(Opts, {"mode": "fast", "other_tool_flag": 1}, load_yaml(y, "opts")) == {"mode": "fast"}
    with pytest.raises(ConfigError, match=r"^--steps: must be >= 1, got 0$"):
        from_namespace(Opts, {"steps": 0}, load_yaml(y, "opts"))


BAD_RL_YAML = {
    "algorithm: GRPO": r"rl.algorithm: 'GRPO' is not one of grpo, .* \(did you mean 'grpo'\?\)",
    "loss_agg: bogus": r"rl.loss_agg: 'bogus' is not one of seq-mean-token-mean, token-mean",
    "beta: a lot": r"rl.beta: expected a number, got 'a lot'",
    "group_sise: 8": r"rl.group_sise: unknown option \(did you mean 'group_size'\?\)",
}


@pytest.mark.parametrize("line", list(BAD_RL_YAML))
def test_bad_rl_yaml_is_one_error_line(tmp_path, line):
    y = tmp_path / "rl.yaml"
    y.write_text(f"train:\n  micro_batch_size: 8\nrl:\n  group_size: 8\n  {line}\n")
    p = subprocess.run([sys.executable, str(REPO / "tools" / "grpo.py"), "--config", str(y)],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2000:]
    assert str(y) in lines[0]
    import re
    assert re.search(BAD_RL_YAML[line], lines[0]), lines[0]


def test_unknown_yaml_section_and_bad_flag_are_one_line(tmp_path):
    y = tmp_path / "r.yaml"
    y.write_text("trian:\n  lr: 1.0\n")
    p = subprocess.run([sys.executable, str(REPO / "tools" / "pretrain.py"), "--config", str(y)],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr[-2000:]
    assert "unknown section 'trian'" in lines[0]
    p = subprocess.run([sys.executable, str(REPO / "tools" / "pretrain.py"), "--lr", "fast"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "argument --lr: invalid float value" in lines[0], p.stderr
