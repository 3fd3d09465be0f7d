"""Training: budget validation, schedules, determinism, Frozen BN switch, NaN guard, hooks, checkpoints."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sr_search import PRESETS, build
from sr_search.model.blocks.layers import FreezableBN
from sr_search.run.data import DataSpec, load_train, load_val
from sr_search.errors import SrSearchError
from sr_search.run.metrics import bicubic_baseline, evaluate
from sr_search.run.train import TrainBudget, load_checkpoint, lr_at, mixed_precision, run



class Tiny(nn.Module):
    """conv - BN - PReLU - conv - shuffle + nearest skip: small enough to train in milliseconds."""

    def __init__(self, scale: int = 2, colors: int = 1, width: int = 8):
        super().__init__()
        self.scale = scale
        self.conv1 = nn.Conv2d(colors, width, 3, padding=1)
        self.bn = FreezableBN(width)
        self.act = nn.PReLU(width)
        self.conv2 = nn.Conv2d(width, colors * scale * scale, 3, padding=1)

    def forward(self, x):
        y = F.pixel_shuffle(self.conv2(self.act(self.bn(self.conv1(x)))), self.scale)
        return y + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def tiny(seed: int = 0, **kw) -> Tiny:
    torch.manual_seed(seed)
    return Tiny(**kw)


@pytest.fixture(scope="module")
def data_x2():
    return load_train(DataSpec(train_max_images=1), scale=2, colors=1)


def budget(**kw) -> TrainBudget:
    base = dict(iterations=12, batch_size=4, lr_patch=8, lr=1e-2)
    base.update(kw)
    return TrainBudget(**base)


# --- budget and schedules ---------------------------------------------------------------------------


def test_budget_rejects_bad_values_naming_the_field():
    with pytest.raises(SrSearchError, match="'iterations'.*greater than or equal to 1"):
        TrainBudget(iterations=0)
    with pytest.raises(SrSearchError, match="'loss'.*'l1', 'l2' or 'charbonnier'.*'huber'"):
        TrainBudget(loss="huber")
    with pytest.raises(SrSearchError, match="'milestones'.*increasing"):
        TrainBudget(milestones=(0.75, 0.5))
    with pytest.raises(SrSearchError, match="'epochs'.*unknown field"):
        TrainBudget(epochs=3)
    assert TrainBudget() == TrainBudget(iterations=1000, loss="l1", schedule="cosine")


def test_learning_rate_schedules():
    cos = TrainBudget(iterations=100, lr=1e-3, schedule="cosine")
    assert lr_at(cos, 0) == pytest.approx(1e-3)
    assert lr_at(cos, 50) == pytest.approx(0.5e-3)
    assert lr_at(cos, 99) == pytest.approx(1e-3 * (1 + math.cos(math.pi * 0.99)) / 2)
    step = TrainBudget(iterations=100, lr=1e-3, schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    assert [lr_at(step, i) for i in (0, 49, 50, 74, 75, 99)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])
    const = TrainBudget(iterations=100, lr=2e-4, schedule="constant")
    assert {lr_at(const, i) for i in range(100)} == {2e-4}


def test_optimizer_follows_the_schedule(data_x2, monkeypatch):
    seen = []
    original = torch.optim.Adam.step

    def spy(self, *a, **kw):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    b = budget(iterations=8, schedule="multistep", milestones=(0.5,), gamma=0.25)
    run(tiny(), data_x2, b, seed=0)
    assert seen == pytest.approx([1e-2] * 4 + [2.5e-3] * 4)


# --- runs -------------------------------------------------------------------------------------------


def test_run_trains_and_reports(data_x2):
    model = tiny()
    result = run(model, data_x2, budget(iterations=60, lr=5e-3), seed=0)
    assert result.status == "complete" and result.error is None
    assert result.iterations == 60 and result.seconds > 0
    its = [i for i, _ in result.history]
    assert its == sorted(its) and its[-1] == 60
    first, last = result.history[0][1], result.history[-1][1]
    assert result.final_loss == last and last < first  # it learns


@pytest.mark.parametrize("loss", ["l2", "charbonnier"])
def test_other_losses(data_x2, loss):
    result = run(tiny(), data_x2, budget(loss=loss), seed=0)
    assert result.status == "complete" and math.isfinite(result.final_loss)


def test_same_seed_same_run(data_x2):
    a, b, c = tiny(), tiny(), tiny()
    ra = run(a, data_x2, budget(), seed=7)
    rb = run(b, data_x2, budget(), seed=7)
    rc = run(c, data_x2, budget(), seed=8)
    assert ra.history == rb.history
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    assert ra.history != rc.history


class Explodes(Tiny):
    def __init__(self, at: int, value: float):
        super().__init__()
        self.calls, self.at, self.value = 0, at, value

    def forward(self, x):
        self.calls += 1
        y = super().forward(x)
        return y * self.value if self.calls >= self.at else y


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_stops_with_the_iteration(data_x2, value):
    torch.manual_seed(0)
    result = run(Explodes(at=7, value=value), data_x2, budget(iterations=50), seed=0)
    assert result.status == "failed"
    assert result.iterations == 7
    assert f"loss became {value} at iteration 7" in result.error


def test_out_of_memory_fails_the_run_not_the_caller(data_x2):
    class Oom(Tiny):
        calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 3:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().forward(x)

    torch.manual_seed(0)
    result = run(Oom(), data_x2, budget(), seed=0)
    assert result.status == "failed"
    assert "out of GPU memory at iteration 3 (batch 4, LR patch 8)" in result.error


# --- precision: AMP control flow (runs on the CPU, where torch's autocast and GradScaler exist too) ------------


@pytest.mark.parametrize("amp, device, dtype, scaled", [
    ("auto", "cuda", torch.float16, True),   # the default on a GPU: fp16 autocast + loss scaling
    ("auto", "cpu", None, False),            # full precision on the CPU unless asked
    ("bf16", "cuda", torch.bfloat16, False),  # bf16 has fp32's range: no loss scaling
    ("fp16", "cpu", torch.float16, True),
    ("off", "cuda", None, False),
])
def test_precision_plan_per_setting_and_device(amp, device, dtype, scaled):
    plan = mixed_precision(amp, torch.device(device))  # a plan makes no CUDA call
    assert (plan.dtype, plan.scaled, plan.device_type) == (dtype, scaled, device)


def test_amp_switch_accepts_yaml_booleans():
    assert TrainBudget(amp=True).amp == "auto" and TrainBudget(amp=False).amp == "off"
    with pytest.raises(SrSearchError, match="'amp'"):
        TrainBudget(amp="fp8")


class Recorder(Tiny):
    """Records the dtypes the first conv computes in."""

    def __init__(self):
        super().__init__()
        self.dtypes = set()
        self.conv1.register_forward_hook(lambda m, a, out: self.dtypes.add(out.dtype))


@pytest.mark.parametrize("amp, expected", [("fp16", torch.float16), ("bf16", torch.bfloat16), ("off", torch.float32)])
def test_mixed_precision_trains_through_autocast_and_loss_scaling(data_x2, amp, expected, monkeypatch):
    scales = []
    real_scale = torch.amp.GradScaler.scale
    monkeypatch.setattr(torch.amp.GradScaler, "scale", lambda self, x: (scales.append(self.get_scale()),
                                                                         real_scale(self, x))[1])
    torch.manual_seed(0)
    model = Recorder()
    result = run(model, data_x2, budget(amp=amp, grad_clip=1.0), seed=0, device="cpu")
    assert result.status == "complete" and math.isfinite(result.final_loss)
    assert model.dtypes == {expected}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # master weights stay fp32
    assert len(scales) == (12 if amp == "fp16" else 0)  # every fp16 step scaled its loss; bf16/off never


def test_a_float64_model_trains_in_float64(data_x2):
    model = tiny().double()
    result = run(model, data_x2, budget(), seed=0)
    assert result.status == "complete"
    assert {p.dtype for p in model.parameters()} == {torch.float64}


def test_frozen_bn_switches_at_the_fraction(data_x2):
    model = tiny()
    states = []
    model.bn.register_forward_pre_hook(
        lambda m, args: states.append((m.frozen, m.running_mean.clone(), m.weight.detach().clone()))
    )
    run(model, data_x2, budget(iterations=10), seed=0, frozen_bn=0.5)
    assert [s[0] for s in states] == [False] * 5 + [True] * 5
    means = [s[1] for s in states]
    assert not torch.equal(means[0], means[4])  # batch statistics update the running mean before...
    assert all(torch.equal(means[5], m) for m in means[6:])  # ...and no longer after the switch
    assert torch.equal(means[5], model.bn.running_mean)
    assert not torch.equal(states[5][2], model.bn.weight.detach())  # gamma keeps training


def test_frozen_bn_defaults_to_the_spec():
    spec = PRESETS["repsr-m4c8-x2"].replace(frozen_bn=0.5)
    data = load_train(DataSpec(train_max_images=1), scale=2, colors=1)
    tiny_budget = budget(iterations=2, batch_size=2, lr_patch=8)
    model = build(spec)
    run(model, data, tiny_budget, seed=0)
    bns = [m for m in model.modules() if isinstance(m, FreezableBN)]
    assert bns and all(m.frozen for m in bns)
    model = build(spec)
    run(model, data, tiny_budget, seed=0, frozen_bn=None)
    assert not any(m.frozen for m in model.modules() if isinstance(m, FreezableBN))


def test_validation_hook_every_n_and_at_the_end(data_x2):
    calls, modes = [], []

    def val_fn(m):
        modes.append(m.training)
        return {"psnr_y": float(len(calls))}

    result = run(tiny(), data_x2, budget(iterations=10, val_every=4), seed=0, val_fn=val_fn,
                 on_validation=lambda it, metrics: calls.append((it, metrics)))
    assert [it for it, _ in calls] == [4, 8, 10]
    assert result.validations == calls
    assert modes == [True, True, True]  # val_fn gets the model as training left it; run restores train mode


def test_real_validation_restores_training_mode(data_x2):
    val = load_val(DataSpec(val_max_size=64), 2, 1)
    model = tiny()
    result = run(model, data_x2, budget(iterations=4, val_every=2), seed=0,
                 val_fn=lambda m: evaluate(m, val, 2, 1))
    assert [it for it, _ in result.validations] == [2, 4]
    assert model.training and math.isfinite(result.validations[-1][1]["psnr_y"])


def test_checkpoint_and_warm_start(data_x2, tmp_path):
    ckpt = tmp_path / "stage1" / "model.pt"
    first = tiny(seed=1)
    run(first, data_x2, budget(), seed=0, checkpoint_path=ckpt)
    assert ckpt.is_file() and not (tmp_path / "stage1" / "model.pt.tmp").exists()

    second = tiny(seed=2)
    before = {k: v.clone() for k, v in second.state_dict().items()}
    # a vanishing learning rate: after one step the weights are still the checkpoint's
    run(second, data_x2, budget(iterations=1, lr=1e-12, schedule="constant", warm_start=str(ckpt)), seed=0)
    for key, value in first.state_dict().items():
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(second.state_dict()[key], value, atol=1e-9, rtol=0)
    assert not torch.equal(before["conv1.weight"], second.state_dict()["conv1.weight"])


def test_warm_start_errors_name_the_file(data_x2, tmp_path):
    with pytest.raises(SrSearchError, match="missing.pt.*does not exist"):
        run(tiny(), data_x2, budget(warm_start=str(tmp_path / "missing.pt")), seed=0)
    other = tmp_path / "other.pt"
    torch.save(Tiny(width=4).state_dict(), other)
    with pytest.raises(SrSearchError, match="other.pt does not fit the model"):
        load_checkpoint(tiny(), other)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"params": tiny(seed=5).state_dict()}, wrapped)  # BasicSR's layout
    model = tiny()
    load_checkpoint(model, wrapped)
    assert torch.equal(model.conv1.weight, tiny(seed=5).conv1.weight)


def test_grad_clip_is_applied(data_x2, monkeypatch):
    calls = []
    original = nn.utils.clip_grad_norm_
    monkeypatch.setattr(nn.utils, "clip_grad_norm_", lambda p, m: calls.append(m) or original(p, m))
    run(tiny(), data_x2, budget(iterations=5, grad_clip=0.5), seed=0)
    assert calls == [0.5] * 5


def test_bad_inputs_raise_before_training():
    rlfn = build(PRESETS["rlfn-s-x4"])
    data4 = load_train(DataSpec(train_max_images=1), scale=4, colors=3)
    with pytest.raises(SrSearchError, match="lr_patch=8.*minimum 15"):
        run(rlfn, data4, budget(lr_patch=8), seed=0)
    data2 = load_train(DataSpec(train_max_images=1), scale=2, colors=3)
    with pytest.raises(SrSearchError, match="x2 .*model is x4"):
        run(rlfn, data2, budget(lr_patch=16), seed=0)
    with pytest.raises(SrSearchError, match="frozen_bn"):
        run(tiny(), data2, budget(), seed=0, frozen_bn=1.5)


@pytest.mark.cuda
def test_cuda_amp_run():
    data = load_train(DataSpec(train_max_images=1), scale=2, colors=1, device="cuda")
    model = tiny()
    result = run(model, data, budget(iterations=20), seed=0)
    assert result.status == "complete" and math.isfinite(result.final_loss)
    assert next(model.parameters()).device.type == "cuda"
    cpu_data = load_train(DataSpec(train_max_images=1), scale=2, colors=1)
    moved = run(tiny(), cpu_data, budget(iterations=5), seed=0, device="cuda")  # batches moved per step
    assert moved.status == "complete"


# --- the acceptance check: a real preset beats bicubic on the built-in set ---------------------------

#: The smoke budget (about 20 s on one core of this CPU): small patches, many steps.
SMOKE = TrainBudget(iterations=800, batch_size=8, lr_patch=16, lr=2e-3)


@pytest.mark.slow
def test_repsr_m4c16_beats_bicubic_on_builtin():
    spec = PRESETS["repsr-m4c16-x4"]
    data = load_train(DataSpec(), spec.scale, spec.colors)
    val = load_val(DataSpec(), spec.scale, spec.colors)
    bicubic = bicubic_baseline(val, spec.scale, spec.colors)["bicubic_psnr_y"]
    torch.manual_seed(0)
    model = build(spec)
    start = time.perf_counter()
    result = run(model, data, SMOKE, seed=0, val_fn=lambda m: evaluate(m, val, spec.scale, spec.colors))
    assert result.status == "complete", result.error
    psnr_y = result.validations[-1][1]["psnr_y"]
    print(f"\nrepsr-m4c16-x4 smoke: psnr_y {psnr_y:.3f} vs bicubic {bicubic:.3f} (gain {psnr_y - bicubic:+.3f} dB), "
          f"{result.seconds / SMOKE.iterations * 100:.2f} s/100 it, {time.perf_counter() - start:.1f} s in all")
    assert psnr_y > bicubic


def test_a_paused_and_resumed_training_follows_the_same_trajectory(data_x2):
    """Successive halving pauses candidates at a rung; continuing from the trainer's state must equal never pausing."""
    from sr_search.run.train import Trainer

    straight = Trainer(tiny(seed=3), data_x2, budget(iterations=12, amp="fp16"), seed=1)
    straight.run_until(12)

    first = Trainer(tiny(seed=3), data_x2, budget(iterations=12, amp="fp16"), seed=1)
    first.run_until(5)
    state = first.state_dict()
    resumed = Trainer(tiny(seed=99), data_x2, budget(iterations=12, amp="fp16"), seed=1)  # other initial weights
    resumed.load_state_dict(state)
    result = resumed.run_until(12)
    assert result.status == "complete" and result.iterations == 12
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [h[0] for h in result.history][-1] == 12
