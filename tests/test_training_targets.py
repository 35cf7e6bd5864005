"""AU-balanced target sampling (loss.target_balance, not the paper's)."""

from __future__ import annotations

import pytest
import torch

from ganimation.config import ConfigError, build_config
from ganimation.training import ACTIVE_AU, GANimationTrainer, balanced_target_table


def skewed_pool() -> torch.Tensor:
    """1,000 samples: 990 smiling (AU index 8), 10 with a jaw drop (index 15), nothing else."""
    pool = torch.zeros(1000, 17)
    pool[:990, 8] = 0.9
    pool[990:, 15] = 0.8
    return pool


def test_table_lists_the_samples_of_each_active_au() -> None:
    table, counts = balanced_target_table(skewed_pool())
    assert counts.tolist() == [990, 10]  # only AUs active somewhere get a row
    assert set(table[1, :10].tolist()) == set(range(990, 1000))
    assert (table[1, 10:] == table[1, 0]).all()  # padding repeats a valid entry
    assert balanced_target_table(torch.full((5, 17), ACTIVE_AU / 2)) is None


def trainer(balance: float) -> GANimationTrainer:
    config = build_config("smoke", overrides=["run.device=cpu", f"loss.target_balance={balance}",
                                               "loss.target_noise=0"])
    return GANimationTrainer(config, skewed_pool(), steps_per_epoch=10, device=torch.device("cpu"))


def test_balanced_sampling_asks_for_rare_aus() -> None:
    plain = trainer(0.0).sample_targets(4000)
    balanced = trainer(1.0).sample_targets(4000)
    jaw = lambda targets: float((targets[:, 15] > 0.5).float().mean())  # noqa: E731
    assert jaw(plain) < 0.03  # about 1 % of samples have it
    assert jaw(balanced) == pytest.approx(0.5, abs=0.05)  # one AU of two, chosen uniformly
    half = trainer(0.5).sample_targets(4000)
    assert jaw(half) == pytest.approx(0.25 + 0.005, abs=0.05)


def test_zero_balance_keeps_the_papers_random_stream() -> None:
    first, second = trainer(0.0), trainer(0.0)
    assert torch.equal(first.sample_targets(16), second.sample_targets(16))
    assert torch.equal(first.rng.get_state(), second.rng.get_state())


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_balance_is_a_probability(value: str) -> None:
    with pytest.raises(ConfigError, match="loss.target_balance"):
        build_config("smoke", overrides=[f"loss.target_balance={value}"])
