"""One optimizer step of the real Trainer for SFT, GRPO (sequence-mean and
token-mean) and the reward-model loss, with one global batch laid out as

* ``one``:    one micro-batch of all B rows (one process),
* ``four``:   four micro-batches of B/4 rows with unequal token / sequence /
  scored-position counts (one process),
* ``legacy``: ``four`` with each micro-batch's loss a mean of its own units,
  weighed 1 (megatron-core's plain averaging: the control that must differ),
* ``dp2``:    two data-parallel ranks of two micro-batches each (torchrun).

Writes, per loss and layout, the parameter update and the reduced gradient
(``main_grad`` after finalize_model_grads) as flat fp32 tensors to OUT.

Adam's first step is lr * g / (|g| + eps); with eps far above |g| the update
is proportional to the gradient, so a normalisation error shows in the
update instead of being flattened by Adam's sign-like first step.

    python loss_norm_worker.py OUT              # one, four, legacy
    torchrun --nproc-per-node 2 loss_norm_worker.py OUT   # dp2
"""

from __future__ import annotations

import functools
import os
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from megatron_dsm.data.tokenizer import build_tokenizer  # noqa: E402
from megatron_dsm.models.config import ModelConfig  # noqa: E402
from megatron_dsm.models.gpt import unwrap  # noqa: E402
from megatron_dsm.models.value_head import build_value_model  # noqa: E402
from megatron_dsm.rl.config import RLConfig  # noqa: E402
from megatron_dsm.rl.loop import RLStage  # noqa: E402
from megatron_dsm.rl.reward_models import rm_forward_step  # noqa: E402
from megatron_dsm.rl.rewards import RuleReward  # noqa: E402
from megatron_dsm.rl.rm_data import Encoded, batch_tensors  # noqa: E402
from megatron_dsm.rl.rollout import Item, build_batch  # noqa: E402
from megatron_dsm.rl.toy import sft_batch, sft_forward_step  # noqa: E402
from megatron_dsm.training.arguments import TrainConfig  # noqa: E402
from megatron_dsm.training.loop import Trainer  # noqa: E402

B = 8
MODEL = dict(num_layers=2, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64,
             vocab_size=259, seq_length=64)


def _train_cfg() -> TrainConfig:
    return TrainConfig(micro_batch_size=2, global_batch_size=B, train_iters=1, lr=100.0,
                       adam_eps=1.0, weight_decay=0.0, clip_grad=0.0, lr_decay_style="constant",
                       seed=11, log_interval=1)


def _rows(seed: int) -> list[tuple[list[int], int]]:
    """Rows (ids, prompt length): prompts of 5-10 tokens, responses of 1-20."""
    rng = random.Random(seed)
    out = []
    for r in (1, 2, 20, 3, 12, 14, 5, 7):
        p = 5 + rng.randrange(6)
        out.append(([rng.randrange(3, 259) for _ in range(p + r)], p))
    return out


def _legacy(forward_step):
    """The same forward step whose loss is the micro-batch's own mean (count 1)."""
    def step(data_iterator, model):
        out, loss_func = forward_step(data_iterator, model)

        def mean(output):
            total, count, metrics = loss_func(output)
            return total / count.clamp(min=1), metrics
        return out, mean
    return step


def _snapshot(trainer) -> torch.Tensor:
    return torch.cat([p.detach().float().reshape(-1).clone() for p in unwrap(trainer.model).parameters()])


def _grads(trainer) -> torch.Tensor:
    return torch.cat([p.main_grad.detach().float().reshape(-1).clone()
                      for p in unwrap(trainer.model).parameters()])


def _step(kind: str, layout: str, out_dir: Path) -> None:
    dp_rank = int(os.environ.get("RANK", "0")) if layout == "dp2" else 0
    rows = list(range(B)) if layout != "dp2" else list(range(dp_rank * B // 2, (dp_rank + 1) * B // 2))
    per = B if layout == "one" else 2
    groups = [rows[i:i + per] for i in range(0, len(rows), per)]
    builder = (lambda c, tc: build_value_model(c, tc)) if kind == "rm" else None
    trainer = Trainer(_train_cfg(), ModelConfig(**MODEL), model_builder=builder)
    if kind == "sft":
        data = _rows(1)
        fwd = sft_forward_step
        mbs = [sft_batch([data[i] for i in g], pad_id=0) for g in groups]
    elif kind == "rm":
        fwd = rm_forward_step
        mbs = [batch_tensors([_rm_examples()[i] for i in g], MODEL["seq_length"], 0) for g in groups]
    else:
        stage, batch, adv, mask, ref = _grpo(kind, trainer)
        fwd = stage.forward_step
        mbs = [{"batch": _rows_of(batch, g), "mask": mask[g], "packed": None, "adv": adv[g],
                "old": None, "ref": ref[g]} for g in groups]
    if layout == "legacy":
        fwd = _legacy(fwd)
    before = _snapshot(trainer)
    res = trainer.train_step(fwd, mbs, num_microbatches=len(mbs), micro_batch_size=per,
                             seq_length=max(m["tokens"].size(1) if "tokens" in m else m["batch"].tokens.size(1)
                                            for m in mbs))
    update, grads = _snapshot(trainer) - before, _grads(trainer)
    if torch.distributed.get_rank() == 0:
        torch.save({"update": update, "grad": grads, "metrics": res.metrics},
                   out_dir / f"{kind}_{layout}.pt")
    trainer.close()


def _rm_examples() -> list[Encoded]:
    """Process-RM examples with 1 to 6 scored steps and soft labels."""
    rng = random.Random(5)
    out = []
    for k, n_steps in enumerate([1, 6, 2, 5, 1, 1, 4, 3]):
        ids = [rng.randrange(3, 259) for _ in range(8 + 5 * n_steps)]
        pos = sorted(rng.sample(range(4, len(ids)), n_steps))
        out.append(Encoded(ids, pos, [rng.choice([0.0, 0.25, 1.0]) for _ in pos]))
    return out


def _grpo(kind: str, trainer):
    """RLStage with GRPO's loss over a fixed rollout batch: random advantages,
    a reference, responses of 1-20 tokens and rows dropped as by dynamic
    sampling (the four micro-batches hold 2, 1, 2 and 0 non-empty rows)."""
    agg = "seq-mean-token-mean" if kind == "grpo_seq" else "token-mean"
    cfg = RLConfig(group_size=4, prompts_per_step=2, loss_agg=agg, beta=0.04, max_new_tokens=20)
    stage = RLStage(cfg, build_tokenizer("byte"), [Item("q", "q", "1")], [], reward=RuleReward())
    stage.trainer, stage.vocab_size = trainer, MODEL["vocab_size"]
    data = _rows(2)
    batch = build_batch([ids[:p] for ids, p in data], [ids[p:] for ids, p in data], 0)
    g = torch.Generator().manual_seed(3)
    adv = torch.randn(B, batch.mask.size(1), generator=g) * batch.mask
    keep = torch.tensor([1., 1., 1., 0., 1., 1., 0., 0.])
    ref = -torch.rand(B, batch.mask.size(1), generator=g) * 3.0
    return stage, batch, adv, batch.mask * keep[:, None], ref


def _rows_of(batch, idx: list[int]):
    return type(batch)(batch.tokens[idx], batch.index[idx], batch.mask[idx],
                       [batch.prompt_lens[i] for i in idx], [batch.response_lens[i] for i in idx])


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    layouts = ["dp2"] if int(os.environ.get("WORLD_SIZE", "1")) == 2 else ["one", "four", "legacy"]
    for kind in ("sft", "grpo_seq", "grpo_token", "rm"):
        for layout in layouts:
            _step(kind, layout, out)


if __name__ == "__main__":
    main()
