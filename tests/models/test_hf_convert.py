"""HF Llama <-> megatron-dsm conversion: logits equal to transformers at
TP=1, TP=2 and PP=2, exact export round trips, config mapping and one-line
errors for what the mapping does not cover."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("hf_logits_worker.py")
SPEC_WORKER = Path(__file__).with_name("spec_portability_worker.py")
TOOL = REPO / "tools" / "convert_hf.py"
PY = sys.executable


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def _cli(argv, capsys):
    """tools/convert_hf.py main() in this process (for errors raised before
    any process group exists); returns (exit code, stderr lines)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_hf_cli", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    capsys.readouterr()  # drop earlier output (e.g. save_pretrained's progress bar)
    rc = mod.main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip().splitlines()


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, nproc=1, timeout=240, check=True):
    if nproc == 1:
        cmd = [PY] + [str(a) for a in args]
    else:
        cmd = [PY, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port())] + [str(a) for a in args]
    env = _env()
    if nproc == 1:
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(k, None)
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                       start_new_session=True)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


def make_hf(path: Path, *, tie=False, vocab=300, seed=0, **over) -> Path:
    """A tiny random-weight LlamaForCausalLM (GQA: 4 heads, 2 KV heads), fp32,
    written with save_pretrained(safe_serialization=True)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    kw = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=64,
              rope_theta=50000.0, rms_norm_eps=1e-5, tie_word_embeddings=tie)
    kw.update(over)
    model = LlamaForCausalLM(LlamaConfig(**kw)).float()
    with torch.no_grad():  # norms away from 1 so a swapped norm would show
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(path, safe_serialization=True)
    return path


def hf_logits(hf_dir: Path, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import LlamaForCausalLM

    m = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return m(tokens).logits


def read_tensors(d: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return make_hf(tmp_path_factory.mktemp("hf") / "tiny")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 300, (2, 24), generator=g)
    p = tmp_path_factory.mktemp("tok") / "tokens.pt"
    torch.save(t, p)
    return t, p


def _import_and_compare(hf, tokens, tmp_path, tp, pp):
    t, tpath = tokens
    save, out = tmp_path / "ckpt", tmp_path / "logits.pt"
    _run([WORKER, hf, save, tp, pp, tpath, out], nproc=tp * pp)
    got = torch.load(out)
    ref = hf_logits(hf, t)
    diff = (got - ref).abs().max().item()
    print(f"TP={tp} PP={pp}: max |megatron - transformers| logits = {diff:.3e}")
    assert got.shape == ref.shape
    assert diff <= 1e-4
    return save


def _export_equal(hf, save, tmp_path):
    out = tmp_path / "exported"
    p = _run([TOOL, "export", "--load", save, "--hf-dir", out])
    assert "wrote 1 safetensors" in p.stdout
    a, b = read_tensors(hf), read_tensors(out)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    cfg_in, cfg_out = json.loads((hf / "config.json").read_text()), json.loads((out / "config.json").read_text())
    from megatron_dsm.models.hf_convert import model_config_from_hf

    assert model_config_from_hf(cfg_in) == model_config_from_hf(cfg_out)
    return out


def test_tp1_logits_and_exact_export(hf_dir, tokens, tmp_path):
    save = _import_and_compare(hf_dir, tokens, tmp_path, 1, 1)
    out = _export_equal(hf_dir, save, tmp_path)
    # The exported directory is a working HF model with the same outputs.
    assert torch.equal(hf_logits(out, tokens[0]), hf_logits(hf_dir, tokens[0]))


@pytest.mark.multiproc
def test_tp2_logits_and_exact_export(hf_dir, tokens, tmp_path):
    save = _import_and_compare(hf_dir, tokens, tmp_path, 2, 1)
    _export_equal(hf_dir, save, tmp_path)


@pytest.mark.multiproc
def test_pp2_logits_and_exact_export(hf_dir, tokens, tmp_path):
    save = _import_and_compare(hf_dir, tokens, tmp_path, 1, 2)
    _export_equal(hf_dir, save, tmp_path)


@pytest.mark.slow
def test_tied_embeddings_llama3_rope_round_trip(tmp_path, tokens):
    rs = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}
    hf = make_hf(tmp_path / "tied", tie=True, seed=5, rope_scaling=rs, rope_theta=500000.0)
    from megatron_dsm.models.hf_convert import model_config_from_hf, read_hf_config

    cfg = model_config_from_hf(read_hf_config(hf))
    assert cfg.rope_scaling_factor == 8.0 and cfg.rotary_base == 500000
    assert cfg.untie_embeddings_and_output_weights is False
    save = _import_and_compare(hf, tokens, tmp_path, 1, 1)
    out = _export_equal(hf, save, tmp_path)
    assert "lm_head.weight" not in read_tensors(out)


def test_vocab_padding_rows_are_zero_and_config_is_recorded(hf_dir, tmp_path):
    save = tmp_path / "ck"
    _run([TOOL, "import", "--hf-dir", hf_dir, "--save", save])
    from torch.distributed.checkpoint import FileSystemReader
    import torch.distributed.checkpoint as dcp
    from megatron.core import dist_checkpointing

    ck = save / "iter_0000000"
    md = FileSystemReader(str(ck)).read_metadata().state_dict_metadata
    emb = torch.empty(tuple(md["embedding.word_embeddings.weight"].size))
    assert emb.shape == (384, 64)  # 300 padded to a multiple of 128
    dcp.load({"embedding.word_embeddings.weight": emb}, storage_reader=FileSystemReader(str(ck)),
             no_dist=True)
    assert torch.count_nonzero(emb[300:]) == 0 and torch.count_nonzero(emb[:300]) > 0
    common = dist_checkpointing.load_common_state_dict(str(ck))["common"]
    assert common["model_config"]["vocab_size"] == 300 and common["iteration"] == 0
    assert (save / "latest_checkpointed_iteration.txt").read_text().strip() == "0"
    assert "vocab_size: 300" in (save / "model.yaml").read_text()


def test_presets_map_to_the_paper_model():
    from megatron_dsm.models.config import preset
    from megatron_dsm.models.hf_convert import HF_PRESETS, hf_config_from_model, model_config_from_hf

    for name in ("deepseek-coder-v1.5-7b", "deepseekmath-7b"):
        cfg = model_config_from_hf(HF_PRESETS[name])
        ref = preset("deepseek-coder-7b")
        for f in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size",
                  "vocab_size", "seq_length", "rotary_base", "norm_epsilon"):
            assert getattr(cfg, f) == getattr(ref, f), (name, f)
        assert cfg.kv_heads == 32 and cfg.untie_embeddings_and_output_weights
        back = hf_config_from_model(cfg, base=HF_PRESETS[name])
        assert model_config_from_hf(back) == cfg and back["bos_token_id"] == 100000
    llama2 = model_config_from_hf(HF_PRESETS["llama-2-7b"])
    assert (llama2.num_layers, llama2.vocab_size, llama2.norm_epsilon) == (32, 32000, 1e-5)
    assert llama2.padded_vocab_size(1) == 32000


@pytest.mark.parametrize("change,words", [
    ({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "num_local_experts": 8},
     "mixture-of-experts"),
    ({"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "kv_lora_rank": 512},
     "latent attention"),
    ({"attention_bias": True}, "biases"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 4.0}}, "rope_scaling type 'linear'"),
    ({"hidden_act": "gelu"}, "hidden_act"),
])
def test_unsupported_configs_fail_with_one_line(tmp_path, change, words, capsys):
    from megatron_dsm.models.hf_convert import HF_PRESETS

    d = tmp_path / "bad"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**HF_PRESETS["deepseekmath-7b"], **change}))
    rc, err = _cli(["import", "--hf-dir", d, "--save", tmp_path / "out"], capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
    assert not (tmp_path / "out").exists()


def test_unmapped_tensor_is_refused(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    hf = make_hf(tmp_path / "extra")
    t = load_file(str(hf / "model.safetensors"))
    t["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(64)
    save_file(t, str(hf / "model.safetensors"), metadata={"format": "pt"})
    rc, err = _cli(["import", "--hf-dir", hf, "--save", tmp_path / "out"], capsys)
    assert rc == 2 and len(err) == 1 and "q_proj.bias" in err[0], err


def test_wrong_process_count_is_one_line(hf_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rc, err = _cli(["import", "--hf-dir", hf_dir, "--save", tmp_path / "o",
                    "--tensor-model-parallel-size", "2"], capsys)
    assert rc == 2 and len(err) == 1 and "torchrun --nproc-per-node 2" in err[0], err


def test_hf_import_loads_into_a_te_spec_model_and_back(hf_dir, tmp_path):
    """An HF import (local spec: no extra state for the final norm) loads into
    a model whose modules declare _extra_state as transformer-engine's do,
    which keep their own; that model's checkpoint (with extra state) loads
    into the local spec and into itself, and exports to the same HF tensors."""
    out = tmp_path / "res.pt"
    _run([SPEC_WORKER, hf_dir, tmp_path, out])
    r = torch.load(out, weights_only=False)
    assert {"decoder.final_layernorm._extra_state",
            "decoder.layers.0.self_attention.linear_qkv._extra_state"} <= set(r["te_keys"])
    ref = hf_logits(hf_dir, r["tokens"])
    assert (r["te_logits"] - ref).abs().max().item() <= 1e-4
    assert torch.equal(r["local_logits"], r["te_logits"])
    empty = torch.empty(0, dtype=torch.uint8)
    assert torch.equal(r["te_extra_state"], empty) and torch.equal(r["te2_extra_state"], empty)
    back, orig = read_tensors(tmp_path / "hf_back"), read_tensors(hf_dir)
    assert sorted(back) == sorted(orig)
    assert all(torch.equal(back[k], orig[k]) for k in orig)


def test_checkpoint_lacking_a_weight_is_one_error(tmp_path):
    """Only extra state may be absent: a missing weight is one clear line."""
    p = _run(["-c", f"""
import sys; sys.path.insert(0, {str(REPO)!r})
from megatron_dsm import checkpoint, platform
from megatron_dsm.models.config import ModelConfig
from megatron_dsm.models.gpt import build_model, transformer_config
if __name__ == "__main__":
    platform.initialize_distributed(1, 1)
    tied = ModelConfig(vocab_size=64, untie_embeddings_and_output_weights=False)
    checkpoint.save_checkpoint({str(tmp_path)!r}, 0, build_model(tied, transformer_config(tied)), None, {{}})
    cfg = ModelConfig(vocab_size=64)
    try:
        checkpoint.load_checkpoint({str(tmp_path)!r}, build_model(cfg, transformer_config(cfg)), None, finetune=True)
    except checkpoint.CheckpointError as e:
        print("error:", e)
"""])
    assert p.stdout.strip().splitlines()[-1] == (
        f"error: {tmp_path}/iter_0000000: the checkpoint has no output_layer.weight")
