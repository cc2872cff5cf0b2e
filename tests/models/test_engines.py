"""Engine choice and admission against a KV-cache budget (models/engines.py):
chunks by hand, the KV bytes of a row by hand, and chunked greedy decoding
equal to one batch for the direct and megatron engines."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gen_worker import PROMPTS, VOCAB, tiny_model  # noqa: E402

from megatron_dsm import platform  # noqa: E402
from megatron_dsm.models import engines as E  # noqa: E402
from megatron_dsm.models import generation as G  # noqa: E402
from megatron_dsm.models.direct_decode import DirectRolloutEngine  # noqa: E402


@pytest.fixture(scope="module")
def model(dist_cleanup):
    platform.initialize_distributed(1, 1, seed=0)
    return tiny_model(1)


def test_admission_chunks_by_hand():
    # 5 prompts x G=2 at most 6 rows: whole groups, 3 prompts then 2
    assert E.admission_chunks(5, 2, 6) == [([0, 1, 2], 2), ([3, 4], 2)]
    # at most 3 rows with G=8: each prompt's samples split 3 + 3 + 2
    assert E.admission_chunks(2, 8, 3) == [([0], 3), ([0], 3), ([0], 2), ([1], 3), ([1], 3), ([1], 2)]
    assert E.admission_chunks(4, 1, 100) == [([0, 1, 2, 3], 1)]


def test_kv_rows_by_hand(model):
    # 2 layers x (k, v) x 40 positions x 4 KV heads x head dim 16 x 4 bytes (fp32) = 40,960 B a row
    assert E.kv_rows(model, 40_960 * 3, 40) == 3
    assert E.kv_rows(model, 40_960 * 3 - 1, 40) == 2
    assert E.kv_rows(model, 1, 40) == 1                 # at least one row always runs


@pytest.mark.parametrize("kind", ["direct", "megatron"])
def test_admitted_greedy_equals_one_batch(model, kind):
    params = G.SamplingParams(max_new_tokens=6, n=3)
    whole = E.engine_for(kind, model, vocab_size=VOCAB).generate(PROMPTS, params)
    eng = E.engine_for(kind, model, vocab_size=VOCAB, max_rows=4)
    assert isinstance(eng, E.Admitted)
    got = eng.generate(PROMPTS, params)
    assert eng.last_chunks == 4                 # 12 rows, G=3: one prompt (3 rows) per chunk
    assert got.completions == whole.completions and got.prompts == whole.prompts
    # a KV budget of two rows of (longest prompt 6 + 6 new tokens) splits each group 2 + 1
    per_row = 2 * 2 * 12 * 4 * 16 * 4            # layers x (k, v) x positions x heads x dim x 4 B
    budget = E.engine_for(kind, model, vocab_size=VOCAB, kv_cache_gib=2 * per_row / 2**30)
    assert budget.rows_at_once(PROMPTS, params) == 2
    assert budget.generate(PROMPTS, params).completions == whole.completions
    assert budget.last_chunks == 8


def test_auto_choice_off_a_gpu(model):
    assert E.auto_engine(model) == "direct"             # CPU: the direct path supports it
    assert isinstance(E.engine_for("auto", model), DirectRolloutEngine)
    with pytest.raises(G.GenerationError, match="needs the policy's model config"):
        E.engine_for("vllm", model)
