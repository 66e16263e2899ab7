"""Optional patient metadata (age, sex, body site) and its fusion with the image probabilities.

The metadata model is a multinomial logistic regression on one-hot age band, sex and site, fitted on
the training split only, one model per subset of fields (so a missing field is marginalised by the
model that never saw it, not guessed). It is stored as plain arrays (metadata.npz, no pickle) and
applied log-linearly:

    p(class | image, metadata)  proportional to  p(class | image) * (p(class | metadata) / p(class)) ** w

with p(class) the class frequency of the rows that subset's model was fitted on and one weight w
fitted on validation log-loss. No field given: w has nothing to multiply and the image result stands.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from itertools import combinations
from typing import Callable
from pathlib import Path

import numpy as np

FIELDS = ("age", "sex", "site")
SEXES = ("male", "female")  # "unknown" is accepted and means: not given
UNKNOWN = "unknown"
# HAM10000's `localization` vocabulary, without "unknown"
SITES = ("abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand", "lower extremity", "neck",
         "scalp", "trunk", "upper extremity")
AGE_EDGES = (10, 20, 30, 40, 50, 60, 70, 80)  # age bands: < 10, 10-19, ..., 70-79, >= 80
MAX_AGE = 120


class MetadataError(ValueError):
    """A metadata value dermalens does not accept; the message names the accepted values."""


@dataclass(frozen=True)
class PatientMetadata:
    age: float | None = None
    sex: str | None = None
    site: str | None = None

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(f for f in FIELDS if getattr(self, f) is not None)

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in FIELDS}

    def over(self, other: "PatientMetadata | None") -> "PatientMetadata":
        """These details, each field not given taken from `other`: a source that wins field by field."""
        if other is None:
            return self
        return PatientMetadata(*(getattr(self, f) if getattr(self, f) is not None else getattr(other, f)
                                 for f in FIELDS))

    @classmethod
    def parse(cls, age=None, sex=None, site=None) -> "PatientMetadata":
        """Checked values: empty / None / "unknown" mean not given; anything else must be valid."""
        return cls(parse_age(age), parse_sex(sex), parse_site(site))

    @classmethod
    def from_mapping(cls, d: dict | None) -> "PatientMetadata":
        d = d or {}
        site = d.get("site") if d.get("site") not in (None, "") else d.get("localization")
        return cls.parse(d.get("age"), d.get("sex"), site)


def _blank(v) -> bool:
    return v is None or (isinstance(v, str) and v.strip().lower() in ("", UNKNOWN, "nan", "na"))


def parse_age(v) -> float | None:
    if _blank(v):
        return None
    try:
        age = float(v)
    except (TypeError, ValueError):
        raise MetadataError(f"age must be a number of years from 0 to {MAX_AGE}, got {v!r}") from None
    if isinstance(v, bool) or math.isnan(age) or not 0 <= age <= MAX_AGE:
        raise MetadataError(f"age must be a number of years from 0 to {MAX_AGE}, got {v!r}")
    return age


def normalise_word(v: str) -> str:
    """How a sex or site is read wherever it comes from: "Male" -> "male", "lower_extremity" -> "lower extremity"."""
    return v.strip().lower().replace("_", " ")


def parse_sex(v) -> str | None:
    if _blank(v):
        return None
    s = normalise_word(str(v))
    if s not in SEXES:
        raise MetadataError(f"sex must be one of {', '.join(SEXES + (UNKNOWN,))}, got {v!r}")
    return s


def parse_site(v) -> str | None:
    if _blank(v):
        return None
    s = normalise_word(str(v))
    if s not in SITES:
        raise MetadataError(f"site must be one of {', '.join(SITES + (UNKNOWN,))}, got {v!r}")
    return s


def subset_key(fields) -> str:
    return "+".join(f for f in FIELDS if f in fields)


def all_subsets() -> list[tuple[str, ...]]:
    return [c for k in range(1, len(FIELDS) + 1) for c in combinations(FIELDS, k)]


def age_band(age: float) -> int:
    return int(np.searchsorted(AGE_EDGES, age, side="right"))


def encode(meta: PatientMetadata, fields) -> np.ndarray:
    """One-hot age band, sex and site for the fields of one subset (all of them must be present)."""
    parts = []
    if "age" in fields:
        v = np.zeros(len(AGE_EDGES) + 1, np.float32)
        v[age_band(meta.age)] = 1
        parts.append(v)
    if "sex" in fields:
        parts.append(np.array([meta.sex == s for s in SEXES], np.float32))
    if "site" in fields:
        parts.append(np.array([meta.site == s for s in SITES], np.float32))
    return np.concatenate(parts)


class MetadataModel:
    """The per-subset models of metadata.npz: coef_<key> (K x F), intercept_<key> (K), log_prior_<key> (K)."""

    def __init__(self, arrays: dict, weight: float):
        self.arrays = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
        self.weight = float(weight)
        for fields in all_subsets():
            if f"coef_{subset_key(fields)}" not in self.arrays:
                raise MetadataError(f"metadata model lacks the subset {subset_key(fields)!r}")

    @classmethod
    def load(cls, path: Path, weight: float) -> "MetadataModel":
        with np.load(path, allow_pickle=False) as z:
            return cls({k: z[k] for k in z.files}, weight)

    def log_ratio(self, metas: list[PatientMetadata | None], n_classes: int) -> np.ndarray:
        """N x K: log p(class | given fields) - log p(class); a row of zeros where nothing is given."""
        out = np.zeros((len(metas), n_classes))
        for i, m in enumerate(metas):
            if m is None or not m.present:
                continue
            key = subset_key(m.present)
            z = self.arrays[f"coef_{key}"] @ encode(m, m.present) + self.arrays[f"intercept_{key}"]
            z = z - z.max()
            out[i] = z - np.log(np.exp(z).sum()) - self.arrays[f"log_prior_{key}"]
        return out

    def fuse(self, probs: np.ndarray, metas: list[PatientMetadata | None]) -> tuple[np.ndarray, np.ndarray]:
        """(fused probabilities, used flags). Rows without metadata keep the image probabilities."""
        return fuse(probs, self.log_ratio(metas, probs.shape[1]), self.weight), \
            np.array([m is not None and bool(m.present) for m in metas], bool)


def fuse(probs: np.ndarray, log_ratio: np.ndarray, weight: float) -> np.ndarray:
    z = np.log(np.maximum(probs, 1e-12)) + weight * log_ratio
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def read_metadata_csv(path: str | Path, warn: Callable[[str], None] | None = None) -> dict[str, PatientMetadata]:
    """image_id -> PatientMetadata from a CSV with `image_id` and any of `age`, `sex`, `localization` or
    `site` (HAM10000_metadata.csv works as it is), as a spreadsheet saves it (dermalens.csvfiles: UTF-8 or cp1252,
    separated by commas, semicolons or tabs). A bad value is an error naming its line. `warn`: what to do with a
    warning about the file (default: print it on stderr)."""
    from ..csvfiles import PATIENT_COLUMNS, read_table
    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"{path}: metadata file not found")
    table = read_table(path.read_bytes(), path,
                       lambda cols: "image_id" in cols and any(c in cols for c in PATIENT_COLUMNS),
                       lambda columns, hint: "needs an image_id column and at least one of age, sex, localization or "
                                             f"site; found {[c.lower() for c in columns]}{hint}", MetadataError)
    for w in table.warnings:
        (warn or _to_stderr)(w)
    return _read_metadata_rows(path, table.rows, table.delimiter)


def _to_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def patient_from_row(row: dict, delimiter: str, where: str) -> PatientMetadata:
    """A CSV row's patient details (column names in any case; an age with a decimal comma where `;` separates the
    columns), a bad value an error that starts with `where`."""
    from ..csvfiles import decimal_comma
    row = {k.lower(): v for k, v in row.items()}
    if "age" in row:
        row["age"] = decimal_comma(row["age"], delimiter)
    try:
        return PatientMetadata.from_mapping(row)
    except MetadataError as e:
        raise MetadataError(f"{where}: {e}") from None


def _read_metadata_rows(path: Path, rows: list[tuple[int, dict]], delimiter: str) -> dict[str, PatientMetadata]:
    out, first_line, named = {}, {}, {}  # named: stem -> the rows' image_ids that carry an extension
    for line, row in rows:  # the file's own line: a blank line counts
        meta = patient_from_row(row, delimiter, f"{path} line {line}")
        image_id = next(v for k, v in row.items() if k.lower() == "image_id")
        stem = Path(image_id).stem
        # the same image: this id again, its stem's own row ("x" for "x.jpg"), or named rows of this stem
        same = {image_id, *([stem] if stem != image_id else []), *named.get(image_id, ())}
        for other in sorted(same & set(first_line)):
            if out[other] != meta:
                raise MetadataError(f"{path} line {line}: image_id {image_id!r} is also on line {first_line[other]}"
                                    f"{'' if other == image_id else f' as {other!r}'} with other details; which one "
                                    "is right cannot be guessed")
        first_line.setdefault(image_id, line)
        if stem != image_id:
            named.setdefault(stem, []).append(image_id)
        out[image_id] = meta
        out.setdefault(stem, meta)
    return out


def lookup(table: dict[str, PatientMetadata], source: str) -> PatientMetadata | None:
    """The metadata of an image file (by name, then by stem), or None."""
    name = Path(source).name
    return table.get(name) or table.get(Path(source).stem)
