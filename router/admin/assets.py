"""Where the admin page's `templates/` and `static/` directories are, checked at start.

SPEC fixes both at the top level of the repository, outside the package. An editable install
(`pip install -e .`) finds them beside `router/`; a wheel carries them inside the package as
`router/_assets/` (pyproject's hatch force-include), because `Path(__file__).parent.parent`
points into site-packages once installed. A missing directory is a loud error at start, not
a page of 404s (starlette's `StaticFiles.check_config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from router.errors import RouterError

PACKAGE = Path(__file__).resolve().parent.parent  # router/, the package this module sits in
# Files the admin page cannot work without: checked so a half-copied tree fails at start.
REQUIRED = {
    "templates": ("admin.html", "login.html", "docs.html"),
    "static": ("admin.css", "admin.js"),
}


@dataclass(frozen=True, slots=True)
class Assets:
    templates: Path
    static: Path


def candidates() -> list[Path]:
    """Roots to look in, in order: the wheel's copy first, then the source tree."""
    return [PACKAGE / "_assets", PACKAGE.parent]


def _complete(root: Path) -> bool:
    return all(
        (root / folder / name).is_file() for folder, names in REQUIRED.items() for name in names
    )


def find_assets(roots: list[Path] | None = None) -> Assets:
    """The first root holding both directories with every required file; else RouterError."""
    searched = roots if roots is not None else candidates()
    for root in searched:
        if _complete(root):
            return Assets(templates=root / "templates", static=root / "static")
    where = ", ".join(str(r) for r in searched)
    raise RouterError(
        f"admin page assets not found: no templates/ and static/ with "
        f"{', '.join(n for names in REQUIRED.values() for n in names)} under {where}; "
        "reinstall the package (pip install .) or run from a source checkout"
    )
