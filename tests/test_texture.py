"""The texture generator's training (ganimation.texture): pairs of one face, the warp between them,
the loss, and a training run that resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganimation.annotate import source_group
from ganimation.aus import NUM_AUS
from ganimation.config import ModelConfig
from ganimation.files import ImageReadError
from ganimation.inference import GANimation
from ganimation.networks import Generator, GeneratorOutput
from ganimation.shapewarp import pose_features, warp_photo
from ganimation.texture import (PairConfig, TextureTraining, WarpedPairs, attention_target, paste_weight, sample_pairs,
                                texture_loss, to_unit_range, train_texture)

SIZE = 32


@pytest.fixture(scope="module")
def mean_face() -> np.ndarray:
    shape = GANimation.load(device="cpu").shape
    assert shape is not None
    return shape.mean


def smooth_picture(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))


def make_pairs(folder: Path, mean_face: np.ndarray, groups: list[str], config: PairConfig = PairConfig(),
               seed: int = 0) -> WarpedPairs:
    """Crops of random colour whose landmarks are the mean face with a mouth that opens by crop."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names, landmarks = [], []
    for index in range(len(groups)):
        name = f"crop{index}.png"
        Image.fromarray(smooth_picture(rng)).save(folder / name)
        face = mean_face.copy()
        face[[14, 17, 152]] += (0.0, 0.01 * (index % 5))  # lower lip and chin drop
        names.append(name)
        landmarks.append(face)
    aus = rng.uniform(0, 1, (len(groups), NUM_AUS)).astype(np.float32)
    return WarpedPairs(folder, names, np.stack(landmarks), aus, groups, SIZE, config)


def test_source_group_is_the_clip_or_the_folder() -> None:
    assert source_group("/faces/videos/d3.mp4#000042") == "/faces/videos/d3.mp4"
    assert source_group("/faces/celeba/celeb_7/001.jpg") == "/faces/celeba/celeb_7"


def test_pairs_stay_within_a_group_and_are_reproducible(tmp_path: Path, mean_face: np.ndarray) -> None:
    groups = ["clip_a"] * 5 + ["clip_b"] * 4 + ["alone_1", "alone_2", "alone_3"]
    pairs = make_pairs(tmp_path / "images", mean_face, groups, PairConfig(identity_fraction=0.2))
    again = make_pairs(tmp_path / "images", mean_face, groups, PairConfig(identity_fraction=0.2))
    drawn = [pairs.pair(index) for index in range(400)]
    assert drawn == [again.pair(index) for index in range(400)]
    same = sum(first == second for first, second in drawn)
    assert 0.1 * len(drawn) < same < 0.35 * len(drawn)
    for first, second in drawn:
        assert first == second or groups[first] == groups[second]
    assert {first for first, second in drawn if first != second} <= set(range(9))  # singletons only pair with themselves
    assert {groups[first] for first, second in drawn if first != second} == {"clip_a", "clip_b"}


def test_pairs_leave_out_a_turned_head(tmp_path: Path, mean_face: np.ndarray) -> None:
    pairs = make_pairs(tmp_path / "images", mean_face, ["clip"] * 4, PairConfig(identity_fraction=0.0))
    turned = pairs.landmarks[3].copy()
    turned[1] += (0.1, 0.0)  # the nose tip: about 0.25 eye distances of yaw
    pairs.landmarks[3] = turned
    pairs.pose = pose_features(pairs.landmarks)
    drawn = [pairs.pair(index) for index in range(200)]
    assert all(3 not in (first, second) or first == second for first, second in drawn)
    assert any(first != second for first, second in drawn)


def test_an_item_is_the_first_crop_warped_onto_the_second(tmp_path: Path, mean_face: np.ndarray) -> None:
    pairs = make_pairs(tmp_path / "images", mean_face, ["clip"] * 5, PairConfig(identity_fraction=0.3))
    index = next(i for i in range(100) if pairs.pair(i)[0] != pairs.pair(i)[1])
    first, second = pairs.pair(index)
    item = pairs[index]
    pixels = pairs.landmarks * SIZE - 0.5
    expected = warp_photo(pairs.image(first), pixels[first], pixels[second])
    assert torch.equal(item["input"], to_unit_range(expected))
    assert torch.equal(item["target"], to_unit_range(pairs.image(second)))
    assert torch.equal(item["aus"], torch.from_numpy(pairs.aus[second]))
    assert not torch.equal(item["input"], to_unit_range(pairs.image(first)))  # the mouth moved
    same = next(i for i in range(100) if pairs.pair(i)[0] == pairs.pair(i)[1])
    assert torch.equal(pairs[same]["input"], pairs[same]["target"])
    assert item["input"].shape == (3, SIZE, SIZE) and -1.0 <= float(item["input"].min()) <= float(item["input"].max()) <= 1.0


def test_mismatched_inputs_are_refused(tmp_path: Path, mean_face: np.ndarray) -> None:
    with pytest.raises(ValueError, match="must match"):
        WarpedPairs(tmp_path, ["a.png"], mean_face[None], np.zeros((2, NUM_AUS)), ["g"], SIZE)
    pairs = make_pairs(tmp_path / "images", mean_face, ["only"])
    pairs.names[0] = "missing.png"
    with pytest.raises(ImageReadError, match="missing.png"):
        pairs[0]


def test_texture_loss_counts_the_paste_mask_and_teaches_the_mask_where_colour_wins() -> None:
    target = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    keep = torch.full((2, 1, SIZE, SIZE), 1.0 - 1e-4)
    mask = paste_weight(SIZE)
    total, parts = texture_loss(GeneratorOutput(target.clone(), keep, target.clone()), target, target, mask)
    assert parts["l1"] == 0.0 and parts["colour"] == 0.0 and parts["mask"] < 1e-3
    corner = target.clone()
    corner[:, :, 0, 0] += 1.0  # outside the paste mask
    assert texture_loss(GeneratorOutput(corner, keep, corner), corner, target, mask)[0] == pytest.approx(float(total))
    centre = target.clone()
    centre[:, :, SIZE // 2, SIZE // 2] += 0.5
    assert texture_loss(GeneratorOutput(centre, keep, target), target, target, mask)[1]["l1"] > 0

    # the input is wrong in the middle, the colour mask right: the mask must learn to open there,
    # even from a saturated start (its gradient on the logit stays A - target)
    wrong = target.clone()
    wrong[:, :, 10:22, 10:22] = -target[:, :, 10:22, 10:22]
    assert attention_target(wrong, target, target)[:, :, 12:20, 12:20].eq(0).all()
    assert attention_target(wrong, target, target)[:, :, :4].eq(1).all()
    logits = torch.full((2, 1, SIZE, SIZE), 12.0, requires_grad=True)
    attention = torch.sigmoid(logits)
    total, _ = texture_loss(GeneratorOutput(attention * wrong + (1 - attention) * target, attention, target),
                            wrong, target, mask)
    total.backward()
    assert logits.grad is not None
    assert float(logits.grad[:, :, 16, 16].min()) > 1e-5  # descent lowers A (shows C) in the middle
    assert float(logits.grad[:, :, 2:4, 2:4].abs().max()) < 1e-6  # and leaves the kept corner alone


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(ModelConfig(image_size=SIZE, generator_channels=4, generator_residual_blocks=1,
                                 discriminator_channels=4, discriminator_layers=3))


def test_training_resumes_exactly_and_writes_its_record(tmp_path: Path, mean_face: np.ndarray) -> None:
    pairs = make_pairs(tmp_path / "images", mean_face, ["clip"] * 6 + ["alone"])
    settings = TextureTraining(steps=4, batch_size=2, checkpoint_every=2, log_every=1, workers=0)
    straight = tiny_generator()
    train_texture(straight, pairs, tmp_path / "straight", settings)

    train_texture(tiny_generator(), pairs, tmp_path / "resumed", TextureTraining(**{**settings.__dict__, "steps": 2}))
    samples = sample_pairs(pairs, 3)
    resumed = tiny_generator(seed=5)  # its weights come from the checkpoint
    state = train_texture(resumed, pairs, tmp_path / "resumed", settings, samples=samples)
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]) or name.endswith("num_batches_tracked"), name
    assert torch.load(state, weights_only=True)["step"] == 4
    assert not torch.equal(straight.colour_head[0].weight, tiny_generator().colour_head[0].weight)
    lines = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4] and all(line["l1"] > 0 for line in lines)
    grid = np.asarray(Image.open(tmp_path / "resumed" / "samples" / "000004.png"))
    assert grid.shape == (4 * SIZE, 3 * SIZE, 3)
    assert len(samples) == 3 and all(pairs.pair(index)[0] != pairs.pair(index)[1] for index in samples)
