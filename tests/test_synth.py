"""Tests of the procedural face world: determinism, AU locality/continuity/distinctness, data set."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganimation import synth
from ganimation.aus import AU_NAMES, NUM_AUS, OPENFACE_COLUMNS, OPENFACE_SCALE, AUError

SIZE = 96
#: Identities with different hair styles, glasses and backgrounds (checked in test_identity_mix).
SEEDS = (1, 2, 10)
#: Lanczos reduction spreads an edge over about 3 output pixels.
SPREAD = 3


def identity(seed: int) -> synth.Identity:
    return synth.sample_identity(np.random.default_rng(seed))


def only(name: str, value: float) -> np.ndarray:
    aus = np.zeros(NUM_AUS)
    aus[AU_NAMES.index(name)] = value
    return aus


def change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel change summed over the colour channels."""
    return np.abs(a.astype(np.int32) - b.astype(np.int32)).sum(axis=-1).astype(np.float64)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    height, width = mask.shape
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + height, dx:dx + width]
    return out


@pytest.fixture(scope="module")
def renders() -> dict[int, dict[str, dict[float, np.ndarray]]]:
    """Every AU alone at 0 (neutral), 0.3, 0.6 and 1.0 for each test identity."""
    result: dict[int, dict[str, dict[float, np.ndarray]]] = {}
    for seed in SEEDS:
        person = identity(seed)
        neutral = synth.render_face(person, np.zeros(NUM_AUS), SIZE)
        result[seed] = {name: {0.0: neutral, **{v: synth.render_face(person, only(name, v), SIZE) for v in (0.3, 0.6, 1.0)}}
                        for name in AU_NAMES}
    return result


def test_identity_mix() -> None:
    people = [identity(seed) for seed in SEEDS]
    assert len({p.hair_style for p in people}) == 3
    assert any(p.glasses != "none" for p in people)
    many = [identity(seed) for seed in range(60)]
    assert {p.hair_style for p in many} == set(synth.HAIR_STYLES)
    assert {p.background for p in many} == set(synth.BACKGROUND_KINDS)
    assert {p.glasses for p in many} == set(synth.GLASSES_KINDS)
    darkness = [sum(p.skin) / 3 for p in many]
    assert min(darkness) < 90 and max(darkness) > 200, "skin tones should span a wide range"


@pytest.mark.parametrize("size", [32, 77, 128, 512])
def test_render_shape_and_type(size: int) -> None:
    image = synth.render_face(identity(0), synth.sample_aus(np.random.default_rng(0)), size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert image.std() > 10, "a face, not a flat image"


def test_deterministic() -> None:
    person, aus = identity(3), synth.sample_aus(np.random.default_rng(5))
    first = synth.render_face(person, aus, 128)
    synth.render_face(identity(4), np.ones(NUM_AUS), 128)  # no state carried between calls
    assert np.array_equal(first, synth.render_face(person, aus, 128))
    assert np.array_equal(first, synth.render_face(synth.Identity.from_dict(person.to_dict()), aus.tolist(), 128))
    assert not np.array_equal(first, synth.render_face(identity(6), aus, 128))
    assert identity(3) == person and identity(3) != identity(6)


def test_bad_inputs() -> None:
    person = identity(0)
    for size in (31, 513, 64.5, True):
        with pytest.raises(ValueError):
            synth.render_face(person, np.zeros(NUM_AUS), size)  # type: ignore[arg-type]
    with pytest.raises(AUError):
        synth.render_face(person, np.zeros(NUM_AUS - 1))
    with pytest.raises(AUError):
        synth.render_face(person, np.full(NUM_AUS, 1.5))
    with pytest.raises(ValueError):
        synth.Identity.from_dict({**person.to_dict(), "extra": 1})
    with pytest.raises(ValueError):
        synth.Identity(**{**person.to_dict(), "hair_style": "mohawk"})


@pytest.mark.parametrize("seed", SEEDS)
def test_each_au_changes_its_region_only(renders, seed: int) -> None:
    masks = synth.au_region_masks(identity(seed), SIZE)
    assert list(masks) == list(AU_NAMES)
    for name in AU_NAMES:
        diff = change(renders[seed][name][1.0], renders[seed][name][0.0])
        region = masks[name]
        assert diff[region].mean() > 1.0, f"{name}: too small a change in its region"
        assert (diff > 40).sum() >= 5, f"{name}: no clearly visible change"
        outside = diff[~dilate(region, SPREAD)].sum() / diff.sum()
        assert outside < 0.01, f"{name}: {outside:.1%} of the change is outside its region"


@pytest.mark.parametrize("seed", SEEDS)
def test_au_intensity_is_continuous(renders, seed: int) -> None:
    for name in AU_NAMES:
        steps = renders[seed][name]
        d03, d06 = change(steps[0.3], steps[0.0]).mean(), change(steps[0.6], steps[0.0]).mean()
        d10 = change(steps[1.0], steps[0.0]).mean()
        between = change(steps[0.6], steps[0.3]).mean()
        assert 0 < d03 < d06 < d10, f"{name}: change not increasing with intensity ({d03:.3f}, {d06:.3f}, {d10:.3f})"
        assert between > 0.2 * d06, f"{name}: 0.3 and 0.6 look alike"


@pytest.mark.parametrize("seed", SEEDS)
def test_aus_are_distinct(renders, seed: int) -> None:
    diffs = np.stack([change(renders[seed][name][1.0], renders[seed][name][0.0]).ravel() for name in AU_NAMES])
    correlation = np.corrcoef(diffs)
    np.fill_diagonal(correlation, 0.0)
    worst = np.unravel_index(np.argmax(correlation), correlation.shape)
    assert correlation.max() < 0.95, f"{AU_NAMES[worst[0]]} and {AU_NAMES[worst[1]]} change the face alike"


@pytest.mark.parametrize("seed", SEEDS)
def test_hair_background_and_glasses_never_change(seed: int) -> None:
    person = identity(seed)
    face = dilate(synth.face_region_mask(person, SIZE), SPREAD)
    assert 0.15 < face.mean() < 0.7
    neutral = synth.render_face(person, np.zeros(NUM_AUS), SIZE)
    rng = np.random.default_rng(seed)
    for aus in [np.ones(NUM_AUS), *(synth.sample_aus(rng) for _ in range(6))]:
        diff = change(synth.render_face(person, aus, SIZE), neutral)
        assert diff[~face].max() == 0


def test_region_masks_follow_the_pose() -> None:
    person = identity(1)
    masks = synth.au_region_masks(person, 128)
    shifted = synth.au_region_masks(synth.Identity.from_dict({**person.to_dict(), "shift_x": person.shift_x + 0.125}), 128)
    for name in AU_NAMES:
        assert masks[name].any()
        moved = np.roll(masks[name], 16, axis=1)[:, 20:-20]
        assert (moved != shifted[name][:, 20:-20]).sum() <= 0.01 * moved.sum()


def test_sample_aus_statistics() -> None:
    rng = np.random.default_rng(0)
    samples = np.stack([synth.sample_aus(rng) for _ in range(1000)])
    assert samples.shape == (1000, NUM_AUS) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1
    neutral = (samples.sum(axis=1) == 0).mean()
    assert 0.05 < neutral < 0.25
    active = (samples > 0).sum(axis=1).mean()
    assert 1.5 < active < 6, "sparse vectors"
    assert ((samples > 0).mean(axis=0) > 0.05).all(), "every AU occurs"
    happy = samples[:, AU_NAMES.index("AU12")] > 0.3
    assert samples[happy, AU_NAMES.index("AU06")].mean() > samples[~happy, AU_NAMES.index("AU06")].mean() + 0.1



def test_sample_aus_keeps_the_worlds_own_prototypes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The named expressions users ask for may change; a seed's labels (and so the synthetic
    benchmark) must not change with them."""
    from ganimation import aus

    before = np.stack([synth.sample_aus(np.random.default_rng(3)) for _ in range(50)])
    for name in aus.EXPRESSIONS:
        monkeypatch.setitem(aus.EXPRESSIONS, name, {"AU45": 1.0})
    after = np.stack([synth.sample_aus(np.random.default_rng(3)) for _ in range(50)])
    np.testing.assert_array_equal(before, after)
    assert set(synth.LABEL_PROTOTYPES) == set(aus.EXPRESSIONS) - {"neutral"}

def _is_small_change(varied: np.ndarray, base: np.ndarray, tolerance: float = 0.0) -> bool:
    """At most two AUs differ, or the same AUs at one common factor (up to clipping at 1)."""
    if (np.abs(varied - base) > tolerance).sum() <= 2:
        return True
    if not base.any() or ((varied > 0) & (base == 0)).any():
        return False
    unclipped = (base > 0) & (varied > 0) & (varied < 1)
    ratios = varied[unclipped] / base[unclipped]
    return bool(ratios.size) and float(np.ptp(ratios)) < 0.01 + tolerance * 20


def test_vary_aus_makes_small_changes() -> None:
    rng = np.random.default_rng(5)
    kinds = {"few": 0, "scaled": 0}
    for _ in range(400):
        base = synth.sample_aus(rng)
        varied = synth.vary_aus(rng, base)
        assert varied.dtype == np.float32 and varied.shape == (NUM_AUS,)
        assert varied.min() >= 0 and varied.max() <= 1 and not ((varied > 0) & (varied < 0.05)).any()
        assert _is_small_change(varied, base), (base, varied)
        kinds["few" if (varied != base).sum() <= 2 else "scaled"] += 1
    assert kinds["few"] > 150 and kinds["scaled"] > 50, kinds
    neutral = np.zeros(NUM_AUS, dtype=np.float32)
    assert all(1 <= (synth.vary_aus(rng, neutral) > 0).sum() <= 2 for _ in range(50)), "neutral gains one or two AUs"


def test_single_au_poses_one_au_alone() -> None:
    rng = np.random.default_rng(5)
    drawn = np.stack([synth.single_au(rng) for _ in range(400)])
    active = drawn > 0
    assert (active.sum(axis=1) == 1).all()
    assert drawn[active].min() >= 0.15 and drawn[active].max() <= 1.0
    assert active.any(axis=0).all(), "every AU is posed"
    assert np.ptp(drawn[active]) > 0.7, "at intensities across the range"


def test_dataset_single_aus(tmp_path: Path) -> None:
    plain = synth.write_synthetic_dataset(tmp_path / "plain", identities=2, per_identity=3, size=32, seed=6,
                                          variations=0.5)
    zero = synth.write_synthetic_dataset(tmp_path / "zero", identities=2, per_identity=3, size=32, seed=6,
                                         variations=0.5, single_aus=0.0)
    assert (zero / "aus.csv").read_bytes() == (plain / "aus.csv").read_bytes(), "0 keeps older seeds' data"
    posed = synth.write_synthetic_dataset(tmp_path / "posed", identities=2, per_identity=5, size=32, seed=6,
                                          variations=0.5, single_aus=1.0)
    rows = rendered_rows(posed, 32)  # also checks each image is the render of its CSV row
    assert len(rows) == 10 and all((aus > 0).sum() == 1 for _, _, aus in rows)
    assert "single AUs 1.0" in (posed / "README.txt").read_text()
    with pytest.raises(ValueError, match="single_aus"):
        synth.write_synthetic_dataset(tmp_path / "bad", identities=2, per_identity=2, single_aus=-0.1)


def test_dataset_variations(tmp_path: Path) -> None:
    plain = synth.write_synthetic_dataset(tmp_path / "plain", identities=3, per_identity=4, size=32, seed=2)
    zero = synth.write_synthetic_dataset(tmp_path / "zero", identities=3, per_identity=4, size=32, seed=2,
                                         variations=0.0)
    assert (zero / "aus.csv").read_bytes() == (plain / "aus.csv").read_bytes(), "0 keeps older seeds' data"
    varied = synth.write_synthetic_dataset(tmp_path / "varied", identities=3, per_identity=6, size=32, seed=2,
                                           variations=1.0)
    by_identity: dict[str, list[np.ndarray]] = {}
    for filename, identity_name, aus in rendered_rows(varied, 32):
        earlier = by_identity.setdefault(identity_name, [])
        if earlier:
            assert any(_is_small_change(aus, before, tolerance=1e-3) for before in earlier), filename
        earlier.append(aus)
    assert "variations 1.0" in (varied / "README.txt").read_text()
    with pytest.raises(ValueError, match="variations"):
        synth.write_synthetic_dataset(tmp_path / "bad", identities=2, per_identity=2, variations=1.5)


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


def rendered_rows(out: Path, size: int) -> list[tuple[str, str, np.ndarray]]:
    """aus.csv as (filename, identity, AUs in [0, 1]), after checking that every stored image is
    exactly the render of its identity (from identities.json) at the AUs its row reads back as."""
    people = synth.load_identities(out / "identities.json")
    rows = []
    for filename, identity_name, *values in read_csv(out / "aus.csv")[1:]:
        aus = np.array([float(v) for v in values]) / OPENFACE_SCALE
        stored = np.asarray(Image.open(out / "images" / filename).convert("RGB"))
        assert np.array_equal(stored, synth.render_face(people[identity_name], aus, size)), filename
        rows.append((filename, identity_name, aus))
    return rows


def test_write_synthetic_dataset(tmp_path: Path) -> None:
    out = synth.write_synthetic_dataset(tmp_path / "data", identities=5, per_identity=3, size=48, seed=3)
    rows = read_csv(out / "aus.csv")
    assert rows[0] == ["filename", "identity", *OPENFACE_COLUMNS]
    assert len(rows) == 1 + 15
    values = np.array([[float(v) for v in row[2:]] for row in rows[1:]])
    assert values.min() >= 0 and values.max() <= OPENFACE_SCALE
    for row in rows[1:]:
        assert (out / "images" / row[0]).is_file()
        assert row[0].startswith(row[1] + "_")
    identity_of = {row[0]: row[1] for row in rows[1:]}
    train = [r[0] for r in read_csv(out / "train_ids.csv")[1:]]
    test = [r[0] for r in read_csv(out / "test_ids.csv")[1:]]
    assert read_csv(out / "train_ids.csv")[0] == ["filename"] == read_csv(out / "test_ids.csv")[0]
    assert sorted(train + test) == sorted(identity_of)
    assert test and train
    assert not {identity_of[f] for f in train} & {identity_of[f] for f in test}
    assert (out / "README.txt").read_text().strip()

    assert json.loads((out / "identities.json").read_text())["size"] == 48
    assert len(rendered_rows(out, 48)) == 15
    assert not list(out.rglob(".*.tmp*")), "no temporary files left behind"

    again = synth.write_synthetic_dataset(tmp_path / "again", identities=5, per_identity=3, size=48, seed=3)
    assert (again / "aus.csv").read_bytes() == (out / "aus.csv").read_bytes()
    assert (again / "identities.json").read_bytes() == (out / "identities.json").read_bytes()
    other = synth.write_synthetic_dataset(tmp_path / "other", identities=5, per_identity=3, size=48, seed=4)
    assert (other / "aus.csv").read_bytes() != (out / "aus.csv").read_bytes()


def test_parallel_rendering_writes_the_same_dataset(tmp_path: Path) -> None:
    serial = synth.write_synthetic_dataset(tmp_path / "serial", identities=5, per_identity=3, size=32, seed=5,
                                           variations=0.5)
    parallel = synth.write_synthetic_dataset(tmp_path / "parallel", identities=5, per_identity=3, size=32, seed=5,
                                             variations=0.5, workers=2)
    files = sorted(path.relative_to(serial) for path in serial.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(parallel) for path in parallel.rglob("*") if path.is_file())
    assert len(files) == 15 + 5  # images + aus.csv, the two splits, identities.json, README.txt
    for name in files:
        assert (serial / name).read_bytes() == (parallel / name).read_bytes(), name
    with pytest.raises(ValueError, match="workers"):
        synth.write_synthetic_dataset(tmp_path / "bad", identities=2, per_identity=1, workers=-1)


def test_dataset_argument_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        synth.write_synthetic_dataset(tmp_path, identities=0, per_identity=1)
    with pytest.raises(ValueError):
        synth.write_synthetic_dataset(tmp_path, identities=2, per_identity=1, test_fraction=1.0)
    out = synth.write_synthetic_dataset(tmp_path / "one", identities=1, per_identity=1, size=32)
    assert len(read_csv(out / "test_ids.csv")) == 1 and len(read_csv(out / "train_ids.csv")) == 2


def test_contact_sheet() -> None:
    sheet = synth.au_contact_sheet(identity(2), size=48)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 6 * 48
