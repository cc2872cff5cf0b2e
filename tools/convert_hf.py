#!/usr/bin/env python
"""Hugging Face Llama-family checkpoints <-> megatron-dsm dist checkpoints.

  import: torchrun --nproc-per-node TPxPP tools/convert_hf.py import --hf-dir HF --save OUT \
              --tensor-model-parallel-size TP --pipeline-model-parallel-size PP
          (plain python for TP=PP=1).  OUT/iter_0000000 loads with
          tools/pretrain.py --load OUT --finetune --config OUT/model.yaml.
  export: python tools/convert_hf.py export --load CKPT --hf-dir OUT   (any saved layout)
  config: python tools/convert_hf.py config --preset deepseekmath-7b   (print a config.json preset)
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def build_parser() -> argparse.ArgumentParser:
    from megatron_dsm.models.hf_convert import HF_PRESETS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser("import", help="HF safetensors -> dist checkpoint")
    imp.add_argument("--hf-dir", required=True)
    imp.add_argument("--save", required=True)
    imp.add_argument("--tensor-model-parallel-size", type=int, default=1)
    imp.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    imp.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                     help="parameter dtype of the checkpoint (auto: fp32/bf16 as stored, else fp32)")
    imp.add_argument("--make-vocab-size-divisible-by", type=int, default=128)
    exp = sub.add_parser("export", help="dist checkpoint -> HF safetensors + config.json")
    exp.add_argument("--load", required=True)
    exp.add_argument("--hf-dir", required=True)
    exp.add_argument("--max-shard-size-gb", type=float, default=5.0)
    cfg = sub.add_parser("config", help="print a documented config.json preset")
    cfg.add_argument("--preset", required=True, choices=sorted(HF_PRESETS))
    return p


def main(argv=None) -> int:
    from megatron_dsm import platform
    from megatron_dsm.config import ConfigError
    from megatron_dsm.models import hf_convert
    from megatron_dsm.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "import":
            path = hf_convert.import_hf(
                args.hf_dir, args.save, tp=args.tensor_model_parallel_size,
                pp=args.pipeline_model_parallel_size, dtype=args.dtype,
                make_vocab_size_divisible_by=args.make_vocab_size_divisible_by)
            if int(os.environ.get("RANK", "0")) == 0:
                print(f"saved {path}", flush=True)
        elif args.cmd == "export":
            files = hf_convert.export_hf(args.load, args.hf_dir,
                                         max_shard_bytes=int(args.max_shard_size_gb * 2**30))
            print(f"wrote {len(files)} safetensors file(s) and config.json to {args.hf_dir}", flush=True)
        else:
            print(json.dumps(hf_convert.HF_PRESETS[args.preset], indent=2))
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        platform.destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
