"""The trainer's fast path against the plain reference, the runtime settings and bfloat16's gate.

``benchmarks/reference.py`` is a plain eager GANimation iteration (its own networks, PyTorch's
default Adam, two critic passes, no frozen critic). From the same weights and random stream the
trainer (fused Adam, one critic pass over real and fake, the deepest critic layers as matrix
products) must compute the same step.

Tolerances. Both sides run float32 with the same formulas; they differ in the order of their sums
(oneDNN's blocked convolutions against one matrix product; another CPU's vector width changes the
order again), each sum of n terms carrying a relative error of about sqrt(n) * 2^-24, 1e-5 for the
deepest layer's n = 16,384. Measured on the smoke model: losses within 2.2e-7 (relative),
gradients within 5e-6 (relative L2 per tensor), also between the reference and itself with oneDNN
off. We ask 1e-4 of the losses and 1e-3 of the gradients: a wrong term or a missing one moves them
by far more. Adam's first update is ``lr * g / (|g| + eps)``, +-lr for nearly every gradient, so a
gradient that rounding alone decides the sign of (|g| at 1e-5 of its tensor's largest, e.g. the
first convolution's AU channels, whose constant maps the InstanceNorm cancels) moves by +lr on one
side and -lr on the other: updates are compared where the gradient is at least 1e-3 of its tensor's
largest (and above 100 eps), to 1% of a step (measured: 4e-5 of a step, the float32 rounding of
the weights).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ganimation import runtime
from ganimation.config import build_config
from ganimation.networks import UnfoldConv2d, build_networks
from ganimation.training import GANimationTrainer

ROOT = Path(__file__).resolve().parents[1]
LOSS_RTOL, GRADIENT_RTOL, UPDATE_TOL = 1e-4, 1e-3, 1e-2


def _load_reference():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ganimation_reference", ROOT / "benchmarks" / "reference.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


reference = _load_reference()


def _pair(*overrides: str):  # type: ignore[no-untyped-def]
    """The trainer and the reference from the same weights and seed, and a batch."""
    config = build_config("smoke", overrides=["run.device=cpu", *overrides])
    torch.manual_seed(0)
    generator, discriminator = build_networks(config.model)
    draw = torch.Generator().manual_seed(3)
    size = config.model.image_size
    images = torch.rand(4, 3, size, size, generator=draw) * 2 - 1
    aus, pool = torch.rand(4, 17, generator=draw), torch.rand(10, 17, generator=draw)
    plain = reference.ReferenceGANimation.from_networks(config, generator, discriminator, pool)
    trainer = GANimationTrainer(config, pool, 1000, torch.device("cpu"), generator, discriminator)
    return trainer, plain, images, aus


def _assert_losses_close(plain: dict[str, float], fast: dict[str, float], rtol: float, atol: float = 0.0) -> None:
    for key, value in plain.items():
        assert float(fast[key]) == pytest.approx(value, rel=rtol, abs=atol), key


def _assert_same_update(plain_module: torch.nn.Module, plain_optimizer: torch.optim.Optimizer,
                        fast_module: torch.nn.Module, fast_optimizer: torch.optim.Optimizer,
                        before: list[torch.Tensor], lr: float) -> None:
    """One Adam step from the same weights: gradients (Adam's first moment after one step is
    (1 - beta1) g) and the weights' updates agree."""
    pairs = list(zip(before, plain_module.parameters(), fast_module.parameters(), strict=True))
    assert pairs
    for index, (start, plain_weight, fast_weight) in enumerate(pairs):
        plain_gradient = plain_optimizer.state[plain_weight]["exp_avg"]
        fast_gradient = fast_optimizer.state[fast_weight]["exp_avg"]
        error = (fast_gradient - plain_gradient).norm() / plain_gradient.norm()
        assert error <= GRADIENT_RTOL, (index, float(error))
        clear = (plain_gradient.abs() >= 1e-3 * plain_gradient.abs().max()) & (plain_gradient.abs() > 100 * 1e-8)
        update_error = ((fast_weight - start) - (plain_weight - start)).detach().abs()[clear]
        assert update_error.max() <= UPDATE_TOL * lr, (index, float(update_error.max() / lr))


def test_the_smoke_critic_takes_the_unfold_path() -> None:
    """The equivalence tests below run the fast path: the smoke critic's last layer (4x4 output)."""
    _, discriminator = build_networks(build_config("smoke").model)
    kinds = [type(layer) for layer in discriminator.trunk if isinstance(layer, torch.nn.Conv2d)]
    assert kinds == [torch.nn.Conv2d, torch.nn.Conv2d, UnfoldConv2d]
    _, paper = build_networks(build_config("paper128").model)
    assert [type(layer) is UnfoldConv2d for layer in paper.trunk if isinstance(layer, torch.nn.Conv2d)] == [
        False, False, False, False, True, True]


def test_unfold_convolution_equals_the_convolution() -> None:
    torch.manual_seed(0)
    conv = UnfoldConv2d(16, 8, 4, 2, 1)
    plain = torch.nn.Conv2d(16, 8, 4, 2, 1)
    plain.load_state_dict(conv.state_dict())
    images = torch.randn(3, 16, 8, 8, requires_grad=True)
    torch.testing.assert_close(conv(images), plain(images), rtol=1e-5, atol=1e-6)
    # The gradient penalty differentiates it twice.
    first = torch.autograd.grad(conv(images).square().sum(), images, create_graph=True)[0]
    second = torch.autograd.grad(first.square().sum(), conv.weight)[0]
    first_plain = torch.autograd.grad(plain(images).square().sum(), images, create_graph=True)[0]
    second_plain = torch.autograd.grad(first_plain.square().sum(), plain.weight)[0]
    torch.testing.assert_close(first, first_plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second, second_plain, rtol=1e-4, atol=1e-5)


def test_critic_step_matches_the_plain_reference() -> None:
    trainer, plain, images, aus = _pair()
    before = [parameter.detach().clone() for parameter in plain.critic.parameters()]
    expected = plain.critic_step(images, aus)
    _assert_losses_close(expected, trainer.critic_step(images, aus), LOSS_RTOL)
    _assert_same_update(plain.critic, plain.critic_optimizer, trainer.discriminator, trainer.discriminator_optimizer,
                        before, trainer.config.optim.lr_discriminator)


def test_generator_step_matches_the_plain_reference() -> None:
    trainer, plain, images, aus = _pair()
    before = [parameter.detach().clone() for parameter in plain.generator.parameters()]
    expected = plain.generator_step(images, aus)
    _assert_losses_close(expected, trainer.generator_step(images, aus), LOSS_RTOL)
    _assert_same_update(plain.generator, plain.generator_optimizer, trainer.generator, trainer.generator_optimizer,
                        before, trainer.config.optim.lr_generator)


def test_two_iterations_follow_the_plain_reference() -> None:
    """Flips, targets and mixing weights are drawn in the same order; later steps start from
    weights that differ by the +-lr of rounding-decided signs, so their losses agree less tightly."""
    trainer, plain, images, aus = _pair()
    steps = trainer.config.optim.critic_steps
    for _ in range(2):
        for expected in plain.iteration(images, aus):
            _assert_losses_close(expected, trainer.train_step(images, aus), 1e-3, atol=1e-5)
    assert trainer.progress.generator_steps == 2 and steps == 2


def test_fused_adam_is_adams_update() -> None:
    torch.manual_seed(0)
    weights = [torch.randn(64, 32, requires_grad=True), torch.randn(7, requires_grad=True)]
    copies = [weight.detach().clone().requires_grad_(True) for weight in weights]
    fused = torch.optim.Adam(weights, lr=1e-3, betas=(0.5, 0.999), fused=True)
    plain = torch.optim.Adam(copies, lr=1e-3, betas=(0.5, 0.999), foreach=False)
    for step in range(3):
        gradients = [torch.randn_like(weight) * 10.0 ** -step for weight in weights]
        for group, optimizer in ((weights, fused), (copies, plain)):
            for weight, gradient in zip(group, gradients):
                weight.grad = gradient.clone()
            optimizer.step()
    for weight, copy in zip(weights, copies):
        torch.testing.assert_close(weight, copy, rtol=0, atol=1e-6)


def test_the_trainer_uses_fused_adam_on_the_cpu() -> None:
    trainer, *_ = _pair()
    assert trainer.generator_optimizer.defaults["fused"] and trainer.discriminator_optimizer.defaults["fused"]


# ---------------------------------------------------------------------- bfloat16's gate


def test_bf16_is_refused_with_the_reason_where_the_device_lacks_it(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert "no native bfloat16" in runtime.bf16_unsupported(torch.device("cpu"))
    with caplog.at_level(logging.WARNING, logger="ganimation.runtime"):
        trainer, *_ = _pair("run.bf16=true")
    assert not trainer.bf16
    assert "run.bf16 ignored, computing in float32: this CPU has no native bfloat16" in caplog.text
    with trainer._autocast():
        assert trainer.discriminator(torch.rand(1, 3, 32, 32)).realness.dtype == torch.float32


def test_bf16_is_used_where_the_device_has_it(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert runtime.bf16_unsupported(torch.device("cpu")) is None
    with caplog.at_level(logging.WARNING, logger="ganimation.runtime"):
        trainer, *_ = _pair("run.bf16=true")
    assert trainer.bf16 and "ignored" not in caplog.text
    assert not runtime.use_bf16(False, torch.device("cpu"))


def test_bf16_inference_is_gated_and_stays_close_to_float32(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np

    from ganimation.inference import GANimation

    config = build_config("smoke")
    torch.manual_seed(0)
    generator, discriminator = build_networks(config.model)
    face = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    target = np.random.default_rng(1).random(17).astype(np.float32)
    plain = GANimation(generator, discriminator, config.model, "cpu").animate(face, target).image
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with caplog.at_level(logging.WARNING, logger="ganimation.runtime"):
        assert not GANimation(generator, discriminator, config.model, "cpu", bf16=True).bf16
    assert "bf16 inference ignored, computing in float32: this CPU has no native bfloat16" in caplog.text
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    model = GANimation(generator, discriminator, config.model, "cpu", bf16=True)
    assert model.bf16
    edited = model.animate(face, target).image
    error = np.mean((edited.astype(np.float64) - plain.astype(np.float64)) ** 2)
    assert 10 * np.log10(255.0**2 / max(error, 1e-12)) >= 40.0


def test_bf16_on_cuda_asks_for_native_support(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = {}

    def supported(including_emulation: bool = True) -> bool:
        asked["emulation"] = including_emulation
        return False

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    assert runtime.bf16_unsupported(torch.device("cuda")) == "Tesla V100 has no native bfloat16 arithmetic"
    assert asked == {"emulation": False}


# ---------------------------------------------------------------------- process settings


def test_process_environment_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    runtime.apply_process_environment()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    runtime.apply_process_environment()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_the_cli_sets_the_environment_before_torch_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ganimation import cli

    result = subprocess.run([sys.executable, "-c", "import sys, ganimation.cli; print('torch' in sys.modules)"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert cli.main(["prepare", str(tmp_path / "missing")]) != 0
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_keeping_freed_memory_applies_with_glibc() -> None:
    code = "from ganimation.runtime import keep_freed_memory; print(keep_freed_memory())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    glibc = sys.platform.startswith("linux") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    assert result.stdout.strip() == str(glibc)


# ---------------------------------------------------------------------- no per-step host syncs, one loader


def test_step_metrics_stay_tensors_until_read() -> None:
    trainer, _, images, aus = _pair()
    metrics = trainer.train_step(images, aus)
    assert isinstance(metrics._values["d/total"], torch.Tensor)  # not read yet: no host sync
    assert "d/total" in metrics and len(metrics) == len(list(metrics))
    assert isinstance(metrics["d/total"], float) and metrics._floats is not None
    assert {**metrics}["lr"] == trainer.config.optim.lr_generator


def test_a_run_keeps_one_data_loader_with_persistent_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             dataset_dir: Path) -> None:
    from conftest import smoke_config
    from ganimation import training

    made = []

    class Recorded(training.DataLoader):  # type: ignore[misc]
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            made.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(training, "DataLoader", Recorded)
    # 20 training images in batches of 4: 5 steps an epoch, so 7 steps span two epochs.
    training.train(smoke_config(dataset_dir, tmp_path / "run", 7, "data.num_workers=1"), show_progress=False)
    assert len(made) == 1 and made[0]["persistent_workers"] is True


# ---------------------------------------------------------------------- the benchmarks run (tiny sizes, no timing asserted)


def _run_script(*args: str) -> str:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env=environment)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_gpu_throughput_script_runs_on_the_cpu() -> None:
    import json

    output = _run_script("benchmarks/gpu_throughput.py", "--device", "cpu", "--preset", "smoke", "--batch", "2",
                         "--iterations", "1", "--warmup", "1", "--workers", "1", "--json")
    result = json.loads(output.strip().splitlines()[-1])
    assert result["precision"] == "float32" and result["mfu"] is None and result["iterations_per_second"] > 0
    assert result["tflop_per_iteration"] > 0 and result["paper_schedule_hours"] > 0


@pytest.mark.slow
def test_speed_benchmark_prints_the_comparison() -> None:
    output = _run_script("benchmarks/speed.py", "--preset", "smoke", "--batches", "2", "--rounds", "1",
                         "--inference-batch", "2", "--inference-rounds", "1", "--threads", "1", "--peak-tflops", "1")
    assert "| training iteration, batch 2 (s) |" in output and "| inference, one crop (ms) |" in output
    assert "| batch 2 |" in output and "MFU" in output
