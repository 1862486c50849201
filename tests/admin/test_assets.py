"""Where the admin page's templates/ and static/ are found: source tree or wheel copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.admin.assets import PACKAGE, REQUIRED, candidates, find_assets
from router.errors import RouterError


def make_tree(root: Path) -> Path:
    for folder, names in REQUIRED.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            (root / folder / name).write_text("x", encoding="utf-8")
    return root


def test_the_source_checkout_has_every_asset() -> None:
    assets = find_assets()
    assert (assets.static / "admin.js").is_file()
    assert (assets.templates / "admin.html").is_file()


def test_a_wheel_copy_is_preferred_over_the_source_tree(tmp_path: Path) -> None:
    wheel = make_tree(tmp_path / "router" / "_assets")
    source = make_tree(tmp_path / "src")
    assets = find_assets([wheel, source])
    assert assets.templates == wheel / "templates"
    assert candidates() == [PACKAGE / "_assets", PACKAGE.parent]


def test_missing_or_partial_assets_fail_loudly(tmp_path: Path) -> None:
    partial = make_tree(tmp_path / "partial")
    (partial / "static" / "admin.js").unlink()
    with pytest.raises(RouterError, match="admin page assets not found"):
        find_assets([partial, tmp_path / "nothing"])
