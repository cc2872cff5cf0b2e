"""A small byte-level BPE trained on the toy text and saved as tokenizer.json,
read back through the project's tokenizer (data/tokenizer.py); small reward
-model checkpoints trained by the RM stage (``rm_checkpoint``)."""
from pathlib import Path


def small_tokenizer(texts, path: Path, vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from megatron_dsm.data.tokenizer import build_tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return build_tokenizer("hf", path)


def rm_checkpoint(save, kind: str, tokenizer, *, vocab_size: int = 259, steps: int = 2,
                  hidden: int = 32, seq_length: int = 160) -> str:
    """A small reward model trained for ``steps`` steps by the RM stage
    (records the tokenizer fingerprint like any RM checkpoint): outcome on
    graded arithmetic solutions, process on the generated step set."""
    import json

    from megatron_dsm.models.config import ModelConfig
    from megatron_dsm.rl import prm_toy
    from megatron_dsm.rl.arith_task import generate_problems
    from megatron_dsm.rl.reward_models import RMConfig, train_reward_model
    from megatron_dsm.training.arguments import TrainConfig

    save = Path(save)
    probs, _ = generate_problems(16, 2, seed=1, max_value=9, two_step_prob=1.0)
    if kind == "outcome":
        rows = [{"question": p.question, "solution": p.solution, "answer": str(p.answer + k % 2)}
                for k, p in enumerate(probs)]
    else:
        rows = prm_toy.step_set(probs, seed=1, labelling="propagated")
    data = save.with_name(save.name + "_data.jsonl")
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = TrainConfig(train_iters=steps, micro_batch_size=4, global_batch_size=8, lr=1e-3, seed=3,
                    lr_decay_style="constant", log_interval=steps, save=str(save))
    m = ModelConfig(num_layers=1, hidden_size=hidden, num_attention_heads=4, ffn_hidden_size=2 * hidden,
                    vocab_size=vocab_size, seq_length=seq_length)
    cfg = RMConfig(rm_type=kind, train_data=[str(data)], step_separator=prm_toy.STEP_SEPARATOR)
    train_reward_model(t, m, cfg, tokenizer=tokenizer)
    return str(save)
