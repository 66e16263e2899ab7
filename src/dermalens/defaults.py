"""Every default location in one place: the data folder, the split file, the model bundle, benchmark images.

Each is an absolute path found from this package's own location, never from the working directory, so
`dermalens predict lesion.jpg` works from any folder. The rule, first match wins:

1. the environment: DERMALENS_MODEL (bundle folder), DERMALENS_DATA (HAM10000 folder), DERMALENS_SPLIT,
   DERMALENS_CACHE (feature caches);
2. a source checkout (this file at <repo>/src/dermalens/defaults.py): <repo>/models/dermalens,
   <repo>/splits/ham10000_split.csv, the sibling data folder <repo>/../shared/data/ham10000 and <repo>/cache;
3. an installed package (`pip install .`, not editable): the copies of the bundle and the split file that
   the install puts under <prefix>/share/dermalens/ (pyproject.toml's data-files), and the user's cache folder
   ($XDG_CACHE_HOME or ~/.cache, then dermalens).

This module imports nothing of dermalens, so any module may import it without a cycle.
"""
from __future__ import annotations

import os
import site
import sys
from pathlib import Path

SHIPPED_BUNDLE = "dermalens"  # the bundle's folder name, also the name export gives by default
SPLIT_NAME = "ham10000_split.csv"

_HERE = Path(__file__).resolve().parent


def repo_root() -> Path | None:
    """The source checkout this package runs from, or None for an installed copy."""
    root = _HERE.parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "src" / "dermalens").is_dir() else None


def installed_share() -> list[Path]:
    """Where `pip install .` puts the data files: the environment's prefix, then the user's (pip --user)."""
    return [Path(p) / "share" / "dermalens" for p in (sys.prefix, site.getuserbase())]


def _first_existing(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


def default_model() -> Path:
    if os.environ.get("DERMALENS_MODEL"):
        return Path(os.environ["DERMALENS_MODEL"]).expanduser().resolve()
    root = repo_root()
    candidates = ([root / "models" / SHIPPED_BUNDLE] if root else []) + \
                 [share / "models" / SHIPPED_BUNDLE for share in installed_share()]
    # When none exists, name the first place looked, so the error says where the bundle was expected.
    return _first_existing(candidates) or candidates[0]


def default_split_file() -> Path:
    if os.environ.get("DERMALENS_SPLIT"):
        return Path(os.environ["DERMALENS_SPLIT"]).expanduser().resolve()
    root = repo_root()
    candidates = ([root / "splits" / SPLIT_NAME] if root else []) + \
                 [share / "splits" / SPLIT_NAME for share in installed_share()]
    return _first_existing(candidates) or candidates[0]


def shared_data() -> Path:
    """The folder holding the data sets (ham10000, ham10000_fullres_sample, ...): DERMALENS_DATA's parent,
    else the checkout's sibling ../shared/data, else ./data."""
    if os.environ.get("DERMALENS_DATA"):
        return default_data().parent
    root = repo_root()
    return (root.parent / "shared" / "data") if root else Path.cwd() / "data"


def default_data() -> Path:
    if os.environ.get("DERMALENS_DATA"):
        return Path(os.environ["DERMALENS_DATA"]).expanduser().resolve()
    return shared_data() / "ham10000"


def default_cache() -> Path:
    """The folder for feature caches (`fit-gate --cache` uses its gate/ sub-folder)."""
    if os.environ.get("DERMALENS_CACHE"):
        return Path(os.environ["DERMALENS_CACHE"]).expanduser().resolve()
    root = repo_root()
    if root:
        return root / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser().resolve() / "dermalens"


def fixture_images() -> Path | None:
    """The checkout's three full-size test images (tests/fixtures/fullres), or None for an installed copy."""
    root = repo_root()
    folder = root / "tests" / "fixtures" / "fullres" if root else None
    return folder if folder and folder.is_dir() else None


def bench_images() -> tuple[Path | None, str]:
    """Images for `dermalens bench` and a line saying where they come from: the full-size HAM10000 sample
    when the data folder has it, else the repository's fixtures."""
    sample = shared_data() / "ham10000_fullres_sample"
    if sample.is_dir():
        return sample, f"images: {sample}"
    fixtures = fixture_images()
    where = (f"{sample} not found; for figures over more images put full-size dermoscopic JPEGs there "
             "(e.g. ISIC archive images, see docs/data.md), set DERMALENS_DATA, or pass --images DIR")
    if fixtures:
        return fixtures, f"images: the repository's {len(list(fixtures.glob('*.jpg')))} fixture images ({fixtures}); {where}"
    return None, where


# Module-level values for argparse defaults and older imports (read once, at import).
DEFAULT_MODEL = str(default_model())
DEFAULT_SPLIT_FILE = default_split_file()
DEFAULT_DATA = str(default_data())
DEFAULT_GATE_CACHE = str(default_cache() / "gate")
