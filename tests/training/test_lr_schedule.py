import math

import pytest

from megatron_dsm.training.lr_schedule import lr_at


def test_multistep_is_the_papers_schedule():
    kw = dict(peak=4.2e-4, style="multistep", warmup=2000, total=100_000)
    assert lr_at(0, **kw) == pytest.approx(4.2e-4 / 2000)
    assert lr_at(999, **kw) == pytest.approx(4.2e-4 * 1000 / 2000)
    assert lr_at(1999, **kw) == pytest.approx(4.2e-4)
    assert lr_at(79_999, **kw) == pytest.approx(4.2e-4)
    assert lr_at(80_000, **kw) == pytest.approx(4.2e-4 * 0.316)   # 80% of training
    assert lr_at(89_999, **kw) == pytest.approx(4.2e-4 * 0.316)
    assert lr_at(90_000, **kw) == pytest.approx(4.2e-4 * 0.1)     # 90%
    assert lr_at(99_999, **kw) == pytest.approx(4.2e-4 * 0.1)


def test_cosine_and_constant():
    kw = dict(peak=1.0, style="cosine", warmup=10, total=110, min_lr=0.1)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    # halfway through decay: min + (peak-min) * (1+cos(pi/2))/2
    assert lr_at(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, **kw) == pytest.approx(0.1)
    assert lr_at(500, peak=5e-5, style="constant", warmup=0, total=500) == 5e-5


def test_unknown_style():
    with pytest.raises(ValueError, match="unknown LR schedule"):
        lr_at(1, peak=1.0, style="wavy", warmup=0, total=10)
