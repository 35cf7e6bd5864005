"""The README and docs: every relative link points at a file of the repository, and the README
stays short enough to read in ten minutes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor on the same page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert broken == [], f"{page.name}: links to missing files: {broken}"


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 150


def test_named_expression_table_matches_the_code() -> None:
    from ganimation.aus import EXPRESSIONS

    page = (ROOT / "docs" / "animate.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", page, flags=re.MULTILINE))
    for name, aus in EXPRESSIONS.items():
        listed = dict((au, float(value)) for au, value in re.findall(r"(AU\d\d) ([\d.]+)", rows[name]))
        assert listed == aus, f"docs/animate.md lists {name} as {listed}, the code has {aus}"
