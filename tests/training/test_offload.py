"""Memory off the accelerator (training/offload.py), on CPU: whatever is
parked comes back bit for bit, the storages really are freed while parked,
and training after an offload/restore goes on exactly as without one."""
import torch

from megatron_dsm.training.offload import ParkedStorage, TrainingStateOffload, optimizer_state_tensors

ARGV = ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "2",
        "--ffn-hidden-size", "64", "--seq-length", "16", "--vocab-size", "64",
        "--micro-batch-size", "2", "--global-batch-size", "2", "--train-iters", "3",
        "--lr", "1e-2", "--lr-decay-style", "constant", "--seed", "5"]


def _trainer():
    from megatron_dsm.training.arguments import parse_args
    from megatron_dsm.training.loop import Trainer

    train, model_cfg = parse_args(ARGV)
    return Trainer(train, model_cfg)


def _step(trainer, seed: int):
    from megatron_dsm.training.pretrain import gpt_forward_step

    tok = torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(seed))
    batch = {"tokens": tok[:, :-1], "labels": tok[:, 1:], "loss_mask": torch.ones(2, 16),
             "position_ids": torch.arange(16).expand(2, 16)}
    return trainer.train_step(gpt_forward_step, [batch], seq_length=16, micro_batch_size=2,
                              num_microbatches=1)


def _clones(tensors):
    return [t.detach().clone() for t in tensors]


def test_parked_storage_round_trip_is_exact_and_frees_memory():
    base = torch.randn(40)
    views = [base[:10].view(2, 5), base[10:]]         # two views of one storage: parked once
    other = torch.randn(3, 3, dtype=torch.bfloat16)
    want = _clones(views + [other])
    parked = ParkedStorage(views + [other])
    assert len(parked.entries) == 2 and parked.nbytes == 40 * 4 + 9 * 2
    parked.park()
    assert base.untyped_storage().nbytes() == 0 and other.untyped_storage().nbytes() == 0
    assert views[0].shape == (2, 5)                     # the tensors keep their shapes
    parked.unpark()
    for got, w in zip(views + [other], want):
        assert torch.equal(got, w)
    # read-only use in between: park(copy=False) keeps the host copy, and it is still right
    parked.park(copy=False)
    parked.unpark()
    assert torch.equal(views[1], want[1])
    # written in between: park() copies again
    views[1].add_(1.0)
    parked.park()
    parked.unpark()
    assert torch.equal(views[1], want[1] + 1.0)


def test_training_state_offload_restores_exactly_and_training_goes_on_the_same(dist_cleanup):
    a, b = _trainer(), _trainer()
    for t in (a, b):
        _step(t, 0)
    opt_a = optimizer_state_tensors(a.optimizer, a.model)
    assert len(opt_a) >= 2 * len(list(a.model.parameters()))   # Adam's two moments per weight
    model_ids = {id(p) for p in a.model.parameters()}
    assert not any(id(t) in model_ids for t in opt_a)          # weights are never parked
    want = _clones(opt_a)
    weights = _clones(a.model.parameters())
    off = TrainingStateOffload(a.model, a.optimizer)
    with off.offloaded():
        assert all(t.untyped_storage().nbytes() == 0 for t in opt_a)
        assert all(buf.grad_data.untyped_storage().nbytes() == 0 for buf in a.model.buffers)
        for p, w in zip(a.model.parameters(), weights):       # the model stays usable
            assert torch.equal(p, w)
    assert off.offloads == 1 and off.parked is None
    for got, w in zip(opt_a, want):
        assert torch.equal(got, w)
    assert all(buf.grad_data.untyped_storage().nbytes() > 0 for buf in a.model.buffers)
    # the next steps: exactly those of the twin that never offloaded
    for seed in (1, 2):
        ra, rb = _step(a, seed), _step(b, seed)
        assert ra.metrics == rb.metrics and float(ra.grad_norm) == float(rb.grad_norm)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    with off.offloaded(enabled=False):
        assert all(t.untyped_storage().nbytes() > 0 for t in optimizer_state_tensors(a.optimizer, a.model))
    a.close()
    b.close()


def test_parked_reference_model_is_the_resident_one(dist_cleanup, tmp_path):
    from megatron_dsm.models.gpt import build_model
    from megatron_dsm.rl.rollout import ReferenceModel, build_batch

    t = _trainer()
    _step(t, 0)
    build = lambda: build_model(t.model_cfg, t.tconfig)   # noqa: E731
    parked, resident = ReferenceModel(t.model, build(), offload=True), ReferenceModel(t.model, build())
    assert all(p.untyped_storage().nbytes() == 0 for p in parked.model.parameters())
    batch = build_batch([[1, 2, 3], [4, 5]], [[6, 7, 8], [9]], 0)
    got = parked.logprobs(batch, 2, temperature=1.0, vocab_size=64)
    assert torch.equal(got, resident.logprobs(batch, 2, temperature=1.0, vocab_size=64))
    assert all(p.untyped_storage().nbytes() == 0 for p in parked.model.parameters())
    # pi_ref <- pi_theta while parked: the new weights are what comes back
    _step(t, 1)
    parked.reset_to(t.model)
    with parked.resident() as model:
        state = {k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    for k, v in t.model.module.state_dict().items():
        if torch.is_tensor(v) and k in state:
            assert torch.equal(state[k], v), k
    assert all(p.untyped_storage().nbytes() == 0 for p in parked.model.parameters())
    # a parked reference checkpoints the weights it would use (a dist checkpoint)
    parked.save(tmp_path / "ref")
    resident.load(tmp_path / "ref")
    assert torch.equal(resident.logprobs(batch, 2, temperature=1.0, vocab_size=64),
                       parked.logprobs(batch, 2, temperature=1.0, vocab_size=64))
    t.close()
