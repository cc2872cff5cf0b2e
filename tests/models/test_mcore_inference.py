"""The megatron-core internals generation relies on (models/mcore_inference.py):
present in every supported version, the installed one among them, and a
clear refusal when one is missing."""
import re
from pathlib import Path

import megatron.core
import pytest
import torch

from megatron_dsm.models import mcore_inference as M

REPO = Path(__file__).resolve().parents[2]


def test_internals_exist_in_installed_version():
    """What the wrapper needs (attributes, signatures, the source lines the
    KV-buffer pre-filling depends on), checked in the installed megatron-core
    (a SUPPORTED one: test_installed_version_is_supported_and_pinned)."""
    M.missing.cache_clear()
    assert M.missing() == ()
    assert len(M._checks()) == 10


def test_installed_version_is_supported_and_pinned():
    """The tests run against the version the project pins (requirements.txt,
    hence setup.py, and the Docker image): one supported version, the one installed."""
    assert megatron.core.__version__ in M.SUPPORTED
    pins = {re.sub(r"\s+", "", ln.split("#")[0]) for ln in
            (REPO / "requirements.txt").read_text().splitlines() if ln.startswith("megatron-core")}
    assert pins == {f"megatron-core=={megatron.core.__version__}"}
    assert f'"megatron-core=={megatron.core.__version__}"' in (REPO / "Dockerfile").read_text()


def test_a_missing_internal_is_named(monkeypatch):
    from megatron.core.inference.contexts import StaticInferenceContext

    monkeypatch.delattr(StaticInferenceContext, "enable_decode_mode")
    M.missing.cache_clear()
    try:
        assert M.missing() == ("StaticInferenceContext.enable_decode_mode()",)
        with pytest.raises(M.MegatronCoreAPIError,
                           match=r"megatron-core .* lacks what in-process generation relies on "
                                 r"\(checked for 0\.16\.1\): StaticInferenceContext\.enable_decode_mode"):
            M.StaticKVCache(torch.nn.Linear(1, 1), 1, 4, torch.float32)
    finally:
        monkeypatch.undo()
        M.missing.cache_clear()
    assert M.missing() == ()
