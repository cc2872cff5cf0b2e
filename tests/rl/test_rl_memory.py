"""Memory orchestration in the RL loop (CPU): a GRPO run whose gradient
buffers and optimizer state are parked during every rollout and whose
reference lives in host memory between its passes gives the same losses,
gradient norms and weights as the run that keeps everything resident; and
rows admitted in chunks (``--rollout-batch``) sample (greedy) what one batch samples."""
import torch

from megatron_dsm.data.tokenizer import build_tokenizer
from megatron_dsm.models.gpt import unwrap
from megatron_dsm.rl.config import RLConfig
from megatron_dsm.rl.loop import RLStage
from megatron_dsm.rl.rewards import RuleReward
from megatron_dsm.rl.toy import items_from_problems, toy_items
from megatron_dsm.training.arguments import parse_args
from megatron_dsm.training.loop import Trainer

BASE = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
        "--ffn-hidden-size", "128", "--seq-length", "160", "--vocab-size", "259",
        "--lr", "1e-3", "--lr-decay-style", "constant", "--weight-decay", "0.0",
        "--micro-batch-size", "8", "--global-batch-size", "16", "--log-interval", "1",
        "--prompts-per-step", "4", "--group-size", "4", "--max-new-tokens", "10",
        "--task-train-size", "40", "--task-heldout-size", "8", "--rl-eval-size", "8",
        "--beta", "0.04", "--train-iters", "3", "--seed", "3"]
KEYS = ("policy loss", "kl", "grad norm", "reward mean", "entropy", "logprob mismatch")


def _run(extra):
    train, model_cfg, rl = parse_args(BASE + extra, extra=RLConfig)
    tr, held = toy_items(rl)
    trainer = Trainer(train, model_cfg)
    stage = RLStage(rl, build_tokenizer("byte"), items_from_problems(tr), items_from_problems(held),
                    reward=RuleReward(1.0, 0.0, format_penalty=0.5))
    lines = []
    trainer.fit(stage, on_step=lambda it, fields: lines.append({k: fields[k] for k in KEYS}))
    weights = [p.detach().clone() for p in unwrap(trainer.model).parameters()]
    trainer.close()
    return lines, weights, stage


def test_offloaded_run_equals_resident_run(dist_cleanup):
    resident, w_res, _ = _run([])
    parked, w_park, stage = _run(["--offload-training-state", "--offload-reference"])
    assert stage.offload.offloads >= 3            # every rollout (and evaluation) parked the state
    assert stage.reference.parked is not None and stage.reference.parked.parked
    assert parked == resident
    assert all(torch.equal(a, b) for a, b in zip(w_park, w_res))
    # the direct engine samples with the trainer's own weights: the mismatch is rounding
    assert all(0.0 <= line["logprob mismatch"] < 1e-5 for line in resident)


def test_rollout_batch_admits_rows_in_chunks(dist_cleanup):
    from megatron_dsm.models.engines import Admitted
    from megatron_dsm.models.generation import SamplingParams

    train, model_cfg, rl = parse_args(BASE + ["--rollout-batch", "6"], extra=RLConfig)
    tr, held = toy_items(rl)
    trainer = Trainer(train, model_cfg)
    stage = RLStage(rl, build_tokenizer("byte"), items_from_problems(tr), items_from_problems(held),
                    reward=RuleReward())
    trainer.attach(stage)
    eng = stage.sampler.engine
    assert isinstance(eng, Admitted) and eng.max_rows == 6
    items = items_from_problems(tr)[:5]
    greedy = SamplingParams(max_new_tokens=8, n=2, stop_ids=(stage.sampler.eod,))
    chunked = stage.sampler.generate(items, greedy, weights_from=trainer.model)
    assert eng.last_chunks == 2                     # 10 rows, whole groups of 2, at most 6 a chunk
    whole = eng.engine.generate([stage.sampler.encode_prompt(it.prompt) for it in items], greedy)
    assert chunked.completions == whole.completions
    # the same tokens' log-probs, up to the rounding of a different batch shape
    assert max(abs(a - b) for x, y in zip(chunked.logprobs, whole.logprobs) for a, b in zip(x, y)) < 1e-5
    trainer.close()
