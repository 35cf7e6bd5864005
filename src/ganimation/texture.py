"""The texture generator: what the shape warp cannot draw. **Not the paper's training.**

The shape model (:mod:`ganimation.shapewarp`) moves a real face's landmarks, but a warp only moves
pixels that are already there: an opening mouth shows stretched lips instead of teeth and a dark
mouth, a frown has no furrow. This module trains the paper's generator (Sec. 4.1, colour mask C,
attention mask A, ``A * input + (1 - A) * C``, conditioned on the target AUs) to add what is left,
on top of the warp.

The paper learns from unpaired photos through a critic. On real faces and a CPU budget that
critic's AU head was fooled by patches of colour long before the generator learned a mouth
(docs/real_model.md). Here the supervision is direct instead: two photos of **the same face**
``a`` and ``b`` (two frames of a clip; :class:`WarpedPairs` pairs whatever shares a group). Crop ``a`` is warped so that its
landmarks land on ``b``'s (thin-plate spline, the warp :mod:`ganimation.shapewarp` uses on
photos), and the generator, given that warped crop and ``b``'s AUs, is asked for ``b``. What the
warp leaves between them is exactly texture. Identical pairs (``a = b``) teach it to leave a face
alone when nothing is asked.

Loss (:func:`texture_loss`): L1 distances to ``b`` inside the paste mask, of the edit and of the
colour mask alone (an L1 distance is minimised by the median, so a difference that pairs do not
share, such as another frame's lighting, is not learned); a cross-entropy that teaches the
attention mask to keep the warped input unless the colour mask is plainly better there; and the
paper's attention smoothness (eq. 2). The paper's ``lambda_A * mean(A)`` is left out: it pushes
its generator to act at all, ours is pushed by its target, and a mask pushed open would paint
the colour mask's 128 px over a sharp photo. Adam with the paper's settings (1e-4, betas 0.5 and 0.999).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from ganimation.aus import NUM_AUS
from ganimation.faces import blend_mask
from ganimation.files import load_image, save_image
from ganimation.losses import total_variation
from ganimation.networks import Generator, GeneratorOutput
from ganimation.shapewarp import pose_features, warp_photo

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PairConfig:
    """How training pairs are drawn (:class:`WarpedPairs`)."""

    #: Share of pairs that are one crop twice: the zero edit, which must change nothing.
    identity_fraction: float = 0.15
    #: Largest head-pose difference between the two crops of a pair (:func:`pose_features`, in eye
    #: distances): a thin-plate spline aligns what moves in the image plane, not a turned head.
    max_pose_difference: float = 0.12
    #: Groups larger than this count as that many crops when a pair's group is drawn, so that one
    #: long clip does not take every draw.
    group_weight_cap: int = 60


class WarpedPairs(torch.utils.data.Dataset):
    """Pairs of crops of the same face, the first warped onto the second's landmarks.

    ``names`` are image files in ``folder`` (square crops), ``landmarks`` ``(N, 478, 2)`` in crop
    widths (:func:`ganimation.shapewarp.crop_landmarks`), ``aus`` ``(N, 17)`` on the model's 0-1
    scale, ``groups`` one label per crop (a person, a clip). Item ``i`` is drawn from a generator
    seeded by ``(seed, i)``, so a run resumed at any step sees the pairs it would have seen.
    Each item: ``input`` (the warped crop), ``target`` (the second crop), ``aus`` (the second's
    AUs), each image ``(3, size, size)`` in [-1, 1].
    """

    def __init__(self, folder: str | Path, names: Sequence[str], landmarks: np.ndarray, aus: np.ndarray,
                 groups: Sequence[str], size: int, config: PairConfig = PairConfig(), seed: int = 0,
                 length: int = 10**9) -> None:
        if not (len(names) == len(landmarks) == len(aus) == len(groups)):
            raise ValueError(f"{len(names)} names, {len(landmarks)} landmark sets, {len(aus)} AU rows and "
                             f"{len(groups)} groups: they must match")
        if aus.shape[1:] != (NUM_AUS,):
            raise ValueError(f"AUs must be (N, {NUM_AUS}), got {aus.shape}")
        self.folder, self.names, self.size = Path(folder), list(names), int(size)
        self.landmarks = np.asarray(landmarks, dtype=np.float64)
        self.aus = np.asarray(aus, dtype=np.float32)
        self.config, self.seed, self.length = config, int(seed), int(length)
        self.pose = pose_features(self.landmarks)
        members: dict[str, list[int]] = {}
        for index, group in enumerate(groups):
            members.setdefault(str(group), []).append(index)
        self.groups = [np.array(indices) for indices in members.values() if len(indices) > 1]
        weights = np.array([min(len(indices), config.group_weight_cap) for indices in self.groups], dtype=np.float64)
        self.group_weights = weights / weights.sum() if len(weights) else weights

    def __len__(self) -> int:
        return self.length

    def pair(self, index: int) -> tuple[int, int]:
        """The crops ``(a, b)`` of item ``index``."""
        rng = np.random.default_rng([self.seed, index])
        if not self.groups or rng.random() < self.config.identity_fraction:
            first = int(rng.integers(len(self.names)))
            return first, first
        group = self.groups[rng.choice(len(self.groups), p=self.group_weights)]
        first = int(rng.choice(group))
        close = group[np.abs(self.pose[group] - self.pose[first]).max(1) <= self.config.max_pose_difference]
        close = close[close != first]
        return (first, int(rng.choice(close))) if len(close) else (first, first)

    def image(self, index: int) -> np.ndarray:
        picture = load_image(self.folder / self.names[index])
        return picture if picture.shape[0] == self.size else cv2.resize(picture, (self.size, self.size),
                                                                        interpolation=cv2.INTER_AREA)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        first, second = self.pair(index)
        target = self.image(second)
        source = target if first == second else self.image(first)
        if first != second:
            pixels = self.landmarks[[first, second]] * self.size - 0.5  # crop widths -> pixels
            source = warp_photo(source, pixels[0], pixels[1])
        return {"input": to_unit_range(source), "target": to_unit_range(target),
                "aus": torch.from_numpy(self.aus[second].copy())}


def to_unit_range(image: np.ndarray) -> Tensor:
    """uint8 ``(H, W, 3)`` -> float ``(3, H, W)`` in [-1, 1], the generator's range."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0


def attention_target(image: Tensor, colour: Tensor, target: Tensor, margin: float = 0.08, window: int = 5) -> Tensor:
    """Where the warped input should be kept (1) or the colour mask shown (0): 0 where ``colour``
    is closer to ``target`` than the input by more than ``margin`` (mean L1 over a ``window``
    square, so that a mask is not decided by single noisy pixels). The margin (4 % of the range)
    is above what two frames of a clip differ by in light and noise: the mask opens for what the
    warp got wrong, not for a blurred copy of the target's lighting. ``(B, 1, H, W)``, no gradient."""
    with torch.no_grad():
        gain = (image - target).abs().mean(1, keepdim=True) - (colour - target).abs().mean(1, keepdim=True)
        gain = torch.nn.functional.avg_pool2d(gain, window, stride=1, padding=window // 2, count_include_pad=False)
        return (gain <= margin).to(image.dtype)


def texture_loss(output: GeneratorOutput, image: Tensor, target: Tensor, mask: Tensor, lambda_colour: float = 1.0,
                 lambda_mask: float = 0.1, lambda_tv: float = 1e-5, margin: float = 0.08
                 ) -> tuple[Tensor, dict[str, float]]:
    """The pair loss, all inside the paste ``mask`` ``(H, W)``:

    * L1 of the edit ``A * image + (1 - A) * C`` to ``target``;
    * ``lambda_colour`` x L1 of the colour mask C itself to ``target``: through the edit alone C
      learns only where A already lets it show, and A lets it show only where C is already good;
    * ``lambda_mask`` x the binary cross-entropy of A against :func:`attention_target` (keep the
      input unless C is better by ``margin``). Its gradient on A's logit is ``A - target`` and does not
      vanish as the sigmoid saturates, so a mask that has learned to keep the input everywhere can
      still learn to open where the colour mask becomes better (an L1 or mean(A) term cannot);
    * ``lambda_tv`` x the paper's attention smoothness (eq. 2, :func:`ganimation.losses.total_variation`).

    Returns the total and its parts as floats for logging (``painted``: the mean of ``1 - A``).
    """
    weight = mask.to(target.dtype)[None, None]
    norm = weight.sum() * target.shape[0]

    def masked_l1(first: Tensor, second: Tensor) -> Tensor:
        return ((first - second).abs().mean(1, keepdim=True) * weight).sum() / norm

    edit = masked_l1(output.image, target)
    colour = masked_l1(output.colour, target)
    keep = attention_target(image, output.colour, target, margin)
    # unclamped: BCE's backward divides by A (1 - A), which cancels the sigmoid's gradient exactly
    mask_loss = (torch.nn.functional.binary_cross_entropy(output.attention.float(), keep, reduction="none")
                 * weight).sum() / norm
    smooth = total_variation(output.attention)
    total = edit + lambda_colour * colour + lambda_mask * mask_loss + lambda_tv * smooth
    return total, {"l1": edit.item(), "colour": colour.item(), "mask": mask_loss.item(),
                   "painted": (1.0 - output.attention).mean().item()}


@dataclasses.dataclass
class TextureTraining:
    """Settings of :func:`train_texture` (the optimiser is the paper's)."""

    steps: int = 4000
    batch_size: int = 8
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lambda_colour: float = 1.0
    lambda_mask: float = 0.1
    lambda_tv: float = 1e-5
    mask_margin: float = 0.08
    checkpoint_every: int = 250
    log_every: int = 25
    workers: int = 1


def paste_weight(size: int) -> Tensor:
    """The paste mask of a ``size`` crop (:func:`ganimation.faces.blend_mask`) as a tensor: the
    pixels an edit can reach are the ones the loss counts."""
    return torch.from_numpy(blend_mask(size))


def train_texture(generator: Generator, pairs: WarpedPairs, run: str | Path, settings: TextureTraining,
                  samples: Sequence[int] = ()) -> Path:
    """Train ``generator`` on ``pairs``, resuming from ``run/state.pt`` when it exists.

    Every ``checkpoint_every`` steps the generator, optimiser and step go to ``run/state.pt``
    (written atomically), the losses to ``run/metrics.jsonl`` and, for the pair indices
    ``samples``, a grid ``run/samples/STEP.png`` (rows: warped input, output, target, attention).
    Returns the state file.
    """
    from tqdm import tqdm

    from ganimation.files import atomic_output

    run = Path(run)
    (run / "samples").mkdir(parents=True, exist_ok=True)
    state_path = run / "state.pt"
    optimiser = torch.optim.Adam(generator.parameters(), lr=settings.learning_rate, betas=settings.betas)
    step = 0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        generator.load_state_dict(state["generator"])
        optimiser.load_state_dict(state["optimiser"])
        step = int(state["step"])
        log.info("resuming %s at step %d", run, step)
    mask = paste_weight(pairs.size)
    start = step * settings.batch_size
    subset = torch.utils.data.Subset(pairs, range(start, start + (settings.steps - step) * settings.batch_size))
    loader = torch.utils.data.DataLoader(subset, batch_size=settings.batch_size, shuffle=False,
                                         num_workers=settings.workers, persistent_workers=settings.workers > 0)
    generator.train()
    running: dict[str, list[float]] = {}
    with tqdm(total=settings.steps, initial=step, desc="texture") as progress:
        for batch in loader:
            output = generator(batch["input"], batch["aus"])
            loss, parts = texture_loss(output, batch["input"], batch["target"], mask, settings.lambda_colour,
                                       settings.lambda_mask, settings.lambda_tv, settings.mask_margin)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            progress.update(1)
            for key, value in parts.items():
                running.setdefault(key, []).append(value)
            if step % settings.log_every == 0 or step == settings.steps:
                means = {key: float(np.mean(values)) for key, values in running.items()}
                running.clear()
                progress.set_postfix({key: f"{value:.4g}" for key, value in means.items()})
                with open(run / "metrics.jsonl", "a") as handle:
                    handle.write(json.dumps({"step": step, **means}) + "\n")
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                with atomic_output(state_path) as temporary:
                    torch.save({"generator": generator.state_dict(), "optimiser": optimiser.state_dict(),
                                "step": step}, temporary)
                if samples:
                    write_samples(generator, pairs, samples, run / "samples" / f"{step:06d}.png")
    return state_path


@torch.no_grad()
def write_samples(generator: Generator, pairs: WarpedPairs, indices: Sequence[int], path: Path) -> None:
    """A grid of pairs: columns are pairs; rows the warped input, the output, the target and the
    attention mask (white = input kept)."""
    items = [pairs[index] for index in indices]
    was_training = generator.training
    generator.eval()
    output = generator(torch.stack([item["input"] for item in items]), torch.stack([item["aus"] for item in items]))
    generator.train(was_training)
    rows = [torch.stack([item["input"] for item in items]), output.image, torch.stack([item["target"] for item in items]),
            output.attention.expand(-1, 3, -1, -1) * 2.0 - 1.0]
    grid = torch.cat([torch.cat(list(row), dim=2) for row in rows], dim=1)  # (3, 4H, nW)
    picture = ((grid.clamp(-1, 1) + 1.0) * 127.5).round().byte().permute(1, 2, 0).numpy()
    save_image(path, picture)


def sample_pairs(pairs: WarpedPairs, count: int, seed: int = 1) -> list[int]:
    """Up to ``count`` item indices (beyond any training step's) whose two crops differ, for sample
    grids; fewer when the first ``100 * count`` candidates hold fewer such pairs."""
    start = 10**8 + seed * 10**6
    differing = (index for index in range(start, start + 100 * count) if len(set(pairs.pair(index))) == 2)
    return list(itertools.islice(differing, count))

