"""Each CPU shim in megatron_dsm.platform, tested against the megatron-core
function it covers (single process, gloo)."""
import importlib

import pytest
import torch

from megatron_dsm import platform


@pytest.fixture(scope="module")
def dist():
    info = platform.initialize_distributed(1, 1, seed=3)
    yield info


def test_every_shim_is_installed(dist):
    for shim in platform.SHIMS:
        mod = importlib.import_module(shim.module)
        assert isinstance(mod.torch, platform._CpuTorch), shim.module
        assert shim.covers and shim.why
    for module, attr, repl in platform.FUNCTION_SHIMS:
        assert getattr(importlib.import_module(module), attr) is getattr(platform, repl)
    for module, cls, attr, factory in platform.METHOD_SHIMS:
        fn = getattr(getattr(importlib.import_module(module), cls), attr)
        assert getattr(fn, "__wrapped__", None) is not None, (cls, attr)
        assert getattr(platform, factory).__doc__.count(f"{cls}.{attr}") == 1


def test_not_installable_when_cuda_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeError, match="must not be installed"):
        platform.install_cpu_shims()


def test_rotary_embedding_get_emb_on_cpu(dist):
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    rope = RotaryEmbedding(kv_channels=8, rotary_percent=1.0, use_cpu_initialization=False)
    emb = rope.get_emb(5)
    assert emb.device.type == "cpu" and emb.shape == (5, 1, 1, 8)
    # position 1, first frequency: angle = 1 * base^0 = 1 rad
    assert emb[1, 0, 0, 0].item() == pytest.approx(1.0)
    assert emb[1, 0, 0, 4].item() == pytest.approx(1.0)  # duplicated half


def test_global_memory_buffer_on_cpu(dist):
    from megatron.core.utils import GlobalMemoryBuffer

    buf = GlobalMemoryBuffer()
    t = buf.get_tensor((3, 4), torch.float32, "x")
    assert t.device.type == "cpu" and t.shape == (3, 4)
    t2 = buf.get_tensor((2, 2), torch.float32, "x")
    assert t2.data_ptr() == t.data_ptr()  # reuses the buffer


def test_default_causal_mask_on_cpu(dist):
    from megatron.core.transformer.utils import get_default_causal_mask

    m = get_default_causal_mask(3)
    assert m.device.type == "cpu"
    assert m.tolist() == [[False, True, True], [False, False, True], [False, False, False]]


def test_rng_tracker_forks_cpu_streams(dist):
    from megatron.core import tensor_parallel

    platform.model_parallel_seed(11)
    tracker = tensor_parallel.get_cuda_rng_tracker()
    before = torch.get_rng_state()
    with tracker.fork():
        a = torch.rand(3)
    after = torch.get_rng_state()
    assert torch.equal(before, after)  # the default stream is restored
    with tracker.fork():
        b = torch.rand(3)
    assert not torch.equal(a, b)  # the forked stream advanced
    platform.model_parallel_seed(11)
    with tensor_parallel.get_cuda_rng_tracker().fork():  # reseeding makes a new tracker
        a2 = torch.rand(3)
    assert torch.equal(a, a2)  # reseeding reproduces it


def test_clip_grad_by_total_norm_matches_formula(dist):
    from megatron.core.optimizer import clip_grads

    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])  # norm 5
    clip_grads.clip_grad_by_total_norm_fp32([p], max_norm=1.0, total_norm=5.0)
    assert p.grad.tolist() == pytest.approx([3 / (5 + 1e-6), 4 / (5 + 1e-6)])
    p.grad = torch.tensor([0.3, 0.4])
    clip_grads.clip_grad_by_total_norm_fp32([p], max_norm=1.0, total_norm=0.5)
    assert p.grad.tolist() == pytest.approx([0.3, 0.4])  # below the max: unchanged


def test_grad_norm_and_count_zeros_on_cpu(dist):
    from megatron.core import parallel_state as ps
    from megatron.core.optimizer.clip_grads import count_zeros_fp32, get_grad_norm_fp32

    g = [torch.tensor([3.0, 0.0]), torch.tensor([4.0])]
    assert get_grad_norm_fp32(g, grad_stats_parallel_group=ps.get_model_parallel_group()) \
        == pytest.approx(5.0)
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([0.0, 1.0])
    assert count_zeros_fp32([p], grad_stats_parallel_group=ps.get_model_parallel_group()) == 1


@pytest.mark.parametrize("rot", [32, 16])
def test_fused_rope_hook_is_megatron_rope_bit_for_bit(dist, rot):
    """The CPU fused-RoPE hook against megatron-core's unfused
    _apply_rotary_pos_emb_bshd: forward and input gradient bit for bit, for a
    full and a partial rotary dimension; the tables follow a new freqs."""
    from megatron.core.models.common.embeddings import rope_utils
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    assert rope_utils.fused_apply_rotary_pos_emb is platform._cpu_fused_apply_rotary_pos_emb
    rope = RotaryEmbedding(kv_channels=32, rotary_percent=rot / 32, rotary_base=10000)
    for seq in (9, 13):
        freqs = rope(seq)                                   # [seq, 1, 1, rot]
        g = torch.Generator().manual_seed(seq)
        t = (torch.randn(seq, 2, 3, 32, generator=g) * 3).requires_grad_()
        up = torch.randn(seq, 2, 3, 32, generator=g)
        want = rope_utils._apply_rotary_pos_emb_bshd(t, freqs)
        (want * up).sum().backward()
        want_grad, t.grad = t.grad, None
        got = rope_utils.fused_apply_rotary_pos_emb(t, freqs, interleaved=False)
        (got * up).sum().backward()
        assert torch.equal(got, want) and torch.equal(t.grad, want_grad)
        assert not torch.equal(got, t)                      # it did rotate


def test_rope_fusion_is_on_for_cpu_models(dist):
    from megatron_dsm.models.config import ModelConfig
    from megatron_dsm.models.gpt import transformer_config

    cfg = ModelConfig(num_layers=1, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128,
                      vocab_size=64, seq_length=32)
    assert platform.shims_installed() and transformer_config(cfg).apply_rope_fusion


def test_schedule_ddp_optimizer_and_checkpoint_run_on_cpu(dist, tmp_path):
    """forward_backward_no_pipelining, megatron DDP, the megatron optimizer and
    dist_checkpointing save/load together on one tiny GPTModel."""
    import functools

    from megatron.core import dist_checkpointing
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_dsm.models.config import ModelConfig
    from megatron_dsm.models.gpt import build_model, transformer_config
    from megatron_dsm.training.pretrain import lm_loss_func

    cfg = ModelConfig(num_layers=2, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64,
                      vocab_size=64, seq_length=8)
    tc = transformer_config(cfg)
    model = DistributedDataParallel(tc, DistributedDataParallelConfig(), build_model(cfg, tc))
    opt = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-2, clip_grad=1.0),
                                 [model])
    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(8).expand(2, 8)

    def step(it, m):
        next(it)
        out = m(tokens, pos, None, labels=tokens)
        return out, functools.partial(lm_loss_func, torch.ones(2, 8))

    fb = get_forward_backward_func()
    losses = []
    for _ in range(3):
        model.zero_grad_buffer()
        opt.zero_grad()
        r = fb(forward_step_func=step, data_iterator=iter(range(1)), model=[model],
               num_microbatches=1, seq_length=8, micro_batch_size=2)
        ok, norm, _ = opt.step()
        assert ok and norm > 0
        total, count = r[0]["lm loss"].tolist()      # lm_loss_func's [sum, tokens]
        losses.append(total / count)
    assert losses[-1] < losses[0]
    sd = model.module.sharded_state_dict()
    (tmp_path / "ck").mkdir()
    dist_checkpointing.save(sd, str(tmp_path / "ck"))
    before = {k: v.clone() for k, v in model.module.state_dict().items() if torch.is_tensor(v)}
    for p in model.module.parameters():
        p.data.zero_()
    loaded = dist_checkpointing.load(model.module.sharded_state_dict(), str(tmp_path / "ck"))
    model.module.load_state_dict(loaded)
    for k, v in model.module.state_dict().items():
        if torch.is_tensor(v) and k in before:
            assert torch.equal(v, before[k]), k


def test_cuda_type_names_only_inside_the_context():
    t = torch.zeros(2)
    assert t.type() == "torch.FloatTensor"
    with platform._cuda_type_names():
        assert t.type() == "torch.cuda.FloatTensor"
        assert t.bfloat16().type() == "torch.cuda.BFloat16Tensor"
        assert t.long().type() == "torch.LongTensor"          # not a float type: real name
        assert t.type(torch.float64).dtype == torch.float64   # a conversion is the real one
    assert t.type() == "torch.FloatTensor"


def _distributed_optimizer(seed: int):
    """A tiny GPTModel in megatron-core DDP laid out for, and optimized by,
    megatron-core's DistributedOptimizer."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    from megatron_dsm.models.config import ModelConfig
    from megatron_dsm.models.gpt import build_model, layout_independent_init, transformer_config
    from megatron_dsm.training.optimizer import wrap_ddp

    cfg = ModelConfig(num_layers=2, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64,
                      vocab_size=64, seq_length=8)
    tc = transformer_config(cfg)
    module = build_model(cfg, tc)
    layout_independent_init(module, seed, 0.05, cfg.num_layers)
    model = wrap_ddp(module, tc, distributed_optimizer=True)
    opt = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-2, clip_grad=1.0,
                                                 use_distributed_optimizer=True), [model])
    return model, opt


def _train_steps(model, opt, n: int) -> list[float]:
    import functools

    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_dsm.training.pretrain import lm_loss_func

    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(8).expand(2, 8)

    def step(it, m):
        next(it)
        return m(tokens, pos, None, labels=tokens), functools.partial(lm_loss_func, torch.ones(2, 8))

    losses = []
    for _ in range(n):
        model.zero_grad_buffer()
        opt.zero_grad()
        r = get_forward_backward_func()(forward_step_func=step, data_iterator=iter(range(1)),
                                        model=[model], num_microbatches=1, seq_length=8,
                                        micro_batch_size=2)
        assert opt.step()[0]
        total, count = r[0]["lm loss"].tolist()     # [sum, tokens] of the micro-batch
        losses.append(total / count)
    return losses


def test_distributed_optimizer_builds_checkpoints_and_resumes_on_cpu(dist, tmp_path):
    """The four DistributedOptimizer shims together: it builds over CPU
    parameters (type names), a fresh one loads a checkpoint (state before the
    first step, the 'step' key of the fully reshardable layout) and the
    resumed steps are bit for bit the uninterrupted ones (one step tensor per
    parameter)."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    from megatron_dsm import checkpoint
    from megatron_dsm.models.gpt import unwrap

    model, opt = _distributed_optimizer(seed=4)
    assert isinstance(opt.chained_optimizers[0], DistributedOptimizer)
    _train_steps(model, opt, 2)
    checkpoint.save_checkpoint(str(tmp_path), 2, unwrap(model), opt, {"iteration": 2})
    straight = _train_steps(model, opt, 3)

    model2, opt2 = _distributed_optimizer(seed=5)          # other weights, no optimizer state
    checkpoint.load_checkpoint(str(tmp_path), unwrap(model2), opt2)
    inner = opt2.chained_optimizers[0].optimizer
    steps = [s["step"] for s in inner.state.values()]
    assert len({id(s) for s in steps}) == len(steps) and all(float(s) == 2 for s in steps)
    assert _train_steps(model2, opt2, 3) == straight
    for a, b in zip(unwrap(model).parameters(), unwrap(model2).parameters()):
        assert torch.equal(a, b)


def test_distributed_optimizer_originals_fail_on_cpu(dist):
    """What each shim covers, seen through megatron-core's own functions."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer as D

    shimmed = {attr for module, cls, attr, _ in platform.METHOD_SHIMS if cls == "DistributedOptimizer"}
    assert shimmed == {"_build_model_and_main_param_groups", "state_dict",
                       "_set_main_param_and_optimizer_states", "load_state_dict"}
    build = D.__dict__["_build_model_and_main_param_groups"].__func__.__wrapped__
    model, opt = _distributed_optimizer(seed=4)
    d = opt.chained_optimizers[0]
    with pytest.raises(TypeError, match="torch.cuda.FloatTensor"):
        build(D, d.gbuf_ranges, d.model_param_gbuf_map, d.opt_group_ranges, d.config)
    d.optimizer.state.clear()       # a fresh optimizer: no per-parameter state before step 1
    with pytest.raises((AssertionError, KeyError)):
        D.state_dict.__wrapped__(d)
    # the wrapper creates the state torch's first step would (step 0, zero moments)
    sd = d.state_dict()
    assert all(g["step"] == 0 for g in sd["optimizer"]["param_groups"])
    for state in d.optimizer.state.values():
        assert float(state["step"]) == 0 and not state["exp_avg"].any() and not state["exp_avg_sq"].any()
