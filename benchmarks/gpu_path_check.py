#!/usr/bin/env python
"""The GPU path end to end at TP=2: the second half of benchmarks/gpu_smoke.sh.

Run under torchrun with 2 processes (``gpu_smoke.sh`` does, after
``--preflight`` in a plain process has refused a host that cannot run it in
one line).  On 2 GPUs: the
1B preset (``llama-1b``) with the transformer-engine layer spec, bf16, NCCL,
tensor parallel size 2:

1. a pretraining step through ``Trainer.train_step`` (megatron-core schedule,
   DDP, optimizer) on a seeded random batch;
2. a save (``checkpoint.save_checkpoint``: model + optimizer) and a load into
   a freshly built model, whose parameters must equal the trained ones;
3. generation (``models.generation.generate``, megatron-core's static KV
   cache) of a batch of 8 prompts of mixed lengths, compared row by row with
   each prompt generated alone: the tokens, and each batch row's sampler
   log-probs against the log-probs of the same tokens computed for that row
   alone with no padding (``token_logprobs``).  A row that attended pads
   (what left padding did under the TE spec) shows there.

In bf16 two runs of one row in batches of different sizes may round apart,
and greedy tokens of a barely trained model can flip at a near tie, so on a
GPU the log-prob check (``--gen-tol``) decides and the token agreement is
reported; in fp32 (``--cpu-check``) both must hold.

``--cpu-check``: the same code path on the CPU (gloo, fp32, local spec, a
small config): what ``make test`` runs, so the script is known to work
before GPU time is spent on it.
"""
import argparse
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.gpu_flags import add_host_flags, add_model_flags  # noqa: E402

# megatron-core and the training stack are imported inside the functions
# (optional at refusal time): --preflight answers before loading them.

# prompt lengths of the generation batch: repeats (one group) and singles
LENGTHS = (5, 17, 3, 17, 9, 1, 12, 5)


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(ap)
    ap.add_argument("--max-new-tokens", type=int, default=16, help="generated tokens per row")
    ap.add_argument("--gen-tol", type=float, default=None,
                    help="largest |batch - alone| log-prob allowed (default: 0.1 in bf16, 1e-4 in fp32)")
    add_host_flags(ap, preflight="only check the host (CUDA, 2 GPUs, transformer-engine) outside torchrun")
    args, _ = ap.parse_known_args(argv)      # gpu_smoke.sh passes its throughput flags too
    return args


def refusal(args) -> str | None:
    from megatron_dsm import platform
    from megatron_dsm.models.gpt import transformer_engine_available

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != 2 and not args.preflight:
        return f"run under torchrun with 2 processes (TP=2), not {world}"
    if not platform.cuda_available():
        return None if args.cpu_check else "no CUDA device; run this on a GPU host (or --cpu-check)"
    import torch

    # the device-generic count: CUDA calls stay in megatron_dsm/platform.py
    if torch.accelerator.device_count() < 2:
        return f"TP=2 needs 2 GPUs, this host has {torch.accelerator.device_count()}"
    if not transformer_engine_available() and not args.allow_local_spec:
        return "transformer_engine does not import on this GPU host (or --allow-local-spec)"
    return None


def train_save_load(args, work: str):
    """Steps 1 and 2; returns (trainer, config, loaded model, loss)."""
    import torch

    from megatron_dsm import checkpoint, platform
    from megatron_dsm.models.config import preset
    from megatron_dsm.models.gpt import build_model, transformer_engine_available, unwrap
    from megatron_dsm.training.arguments import TrainConfig
    from megatron_dsm.training.loop import Trainer
    from megatron_dsm.training.pretrain import gpt_forward_step

    cuda = platform.cuda_available()
    over = {"seq_length": args.seq_length}
    if args.vocab_size:
        over["vocab_size"] = args.vocab_size
    cfg = preset(args.model, **over)
    B, S = args.micro_batch_size, args.seq_length
    t = TrainConfig(model=args.model, tensor_model_parallel_size=2, micro_batch_size=B,
                    global_batch_size=B, train_iters=1, bf16=cuda,
                    use_te=cuda and transformer_engine_available(), layout_independent_init=False,
                    lr=1e-4, save=f"{work}/ckpt")
    trainer = Trainer(t, cfg)
    tok = torch.randint(0, cfg.vocab_size, (B, S + 1), generator=torch.Generator().manual_seed(0))
    batch = {"tokens": tok[:, :-1], "labels": tok[:, 1:], "loss_mask": torch.ones(B, S),
             "position_ids": torch.arange(S).expand(B, S)}
    loss = trainer.train_step(gpt_forward_step, [batch]).metrics["lm loss"]
    path = trainer.checkpointer.save(trainer)
    loaded = build_model(cfg, trainer.tconfig, use_te=t.use_te)
    checkpoint.load_checkpoint(str(path), loaded, None, finetune=True)
    trained = dict(unwrap(trainer.model).named_parameters())
    same = all(torch.equal(p, trained[n]) for n, p in loaded.named_parameters())
    if not same:
        raise SystemExit("gpu_path_check: the loaded parameters differ from the saved ones")
    return trainer, cfg, loaded, float(loss), str(path)


def generation_check(args, cfg, model):
    """Step 3: (rows with the single-row tokens, largest |batch - alone| log-prob)."""
    import torch

    from megatron_dsm.models import generation as G

    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, cfg.vocab_size, (n,), generator=g).tolist() for n in LENGTHS]
    params = G.SamplingParams(max_new_tokens=args.max_new_tokens)
    batch = G.generate(model, prompts, params, vocab_size=cfg.vocab_size)
    equal, worst = 0, 0.0
    for p, c, lp in zip(prompts, batch.completions, batch.logprobs):
        alone = G.generate(model, [p], params, vocab_size=cfg.vocab_size)
        equal += alone.completions[0] == c
        with torch.no_grad():       # the batch row's tokens, scored for the row alone, no padding
            ref = G.token_logprobs(model, torch.tensor([p + c]), vocab_size=cfg.vocab_size,
                                   first=len(p) - 1)[0]
        worst = max(worst, (ref.float().cpu() - torch.tensor(lp)).abs().max().item())
    return equal, worst


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    why = refusal(args)
    if why or args.preflight:
        if why:
            print(f"gpu_path_check: {why}", file=sys.stderr)
        return 2 if why else 0
    import torch

    from megatron_dsm import platform
    from megatron_dsm.training.arguments import TrainConfig

    cuda = platform.cuda_available()
    tol = args.gen_tol if args.gen_tol is not None else (0.1 if cuda else 1e-4)
    # the process group first, so that both ranks save to rank 0's folder
    platform.initialize_distributed(2, seed=TrainConfig.seed)
    work = [tempfile.mkdtemp(prefix="gpu_path_check_") if torch.distributed.get_rank() == 0 else None]
    torch.distributed.broadcast_object_list(work, src=0)
    try:
        trainer, cfg, model, loss, path = train_save_load(args, work[0])
        equal, worst = generation_check(args, cfg, model)
        if torch.distributed.get_rank() == 0:
            spec = type(model.decoder.layers[0].self_attention.core_attention).__name__
            print(f"tp2 check: {platform.device_name()}; backend {torch.distributed.get_backend()}; "
                  f"core attention {spec}; {'bf16' if cuda else 'fp32 (cpu check)'}; {args.model} "
                  f"{cfg.num_parameters() / 1e6:,.1f}M params; step 1 lm loss {loss:.4f}; saved and "
                  f"loaded {os.path.basename(path)} (parameters equal)")
            print(f"tp2 generation: {len(LENGTHS)} prompts of lengths {list(LENGTHS)}, "
                  f"{args.max_new_tokens} tokens: rows equal to single-row generation {equal}/"
                  f"{len(LENGTHS)}; max |batch - alone| log-prob {worst:.2e} (tolerance {tol:g})")
        torch.distributed.barrier()
        trainer.close()
    finally:
        if torch.distributed.get_rank() == 0:
            shutil.rmtree(work[0], ignore_errors=True)
    platform.destroy_distributed()
    ok = worst <= tol and (cuda or equal == len(LENGTHS))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
