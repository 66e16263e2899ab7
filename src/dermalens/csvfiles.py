"""The CSV files users write by hand or save from a spreadsheet: their encoding and their separator.

Labels (data.datasets), patient details (inference.metadata) and cluster manifests (cluster.inputs) are all read
through `read_table`, so each takes what a spreadsheet saves: UTF-8 with or without a BOM, UTF-16 with its BOM,
cp1252 (with a warning), separated by commas, semicolons (many European locales) or tabs. Standard library only: the serving install reads metadata files too.
"""
from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DELIMITERS = (",", ";", "\t")
PATIENT_COLUMNS = ("age", "sex", "localization", "site")  # patient details a labels or metadata file may carry
SHOWN = {",": "','", ";": "';'", "\t": "tabs"}


def decode_bytes(data: bytes, path, error: type[Exception] = ValueError) -> tuple[str, list[str]]:
    """The text of a CSV file's bytes and the warnings reading it gave: UTF-8 (with or without BOM, or UTF-16 with
    its BOM), else cp1252 with a warning, as Excel on Windows saves "CSV (comma delimited)". `error`: raised, naming
    the file (`path`), for a file that is no text CSV."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode text"
        try:
            return data.decode("utf-16"), []
        except UnicodeDecodeError as e:
            raise error(f"{path}: not a text CSV file (it starts as UTF-16 but is not: {e.reason})") from None
    if data.startswith(b"PK\x03\x04"):
        raise error(f"{path}: a spreadsheet workbook (.xlsx) or another zip file, not a CSV file; save it "
                    "as CSV UTF-8 (or CSV) from the spreadsheet program")
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
    if b"\x00" not in data:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            pass
        else:
            return text, [f"{path} is not UTF-8 (line {line} is the first that is not), so it is read as cp1252 "
                          "(Windows Latin-1, as Excel saves a CSV); check that accented letters came out right, "
                          "or save it as CSV UTF-8"]
    raise error(f"{path} line {line}: not a text CSV file (neither UTF-8 nor cp1252); save it as CSV UTF-8")


def headers(text: str, path: Path, error: type[Exception] = ValueError) -> dict[str, list[str]]:
    """The first line split by each separator: separator -> its column names, stripped."""
    out = {}
    for d in DELIMITERS:
        try:
            out[d] = [h.strip() for h in next(csv.reader(io.StringIO(text, newline=""), delimiter=d), [])]
        except csv.Error as e:
            raise error(f"{path} line 1: not a readable CSV file ({e})") from None
    return out


def delimiter_that_fits(found: dict[str, list[str]], fits: Callable[[list[str]], bool]) -> str | None:
    """The first separator whose lower-cased column names `fits` accepts; None when none does."""
    return next((d for d in DELIMITERS if fits([h.lower() for h in found[d]])), None)


def likely(found: dict[str, list[str]]) -> tuple[list[str], str]:
    """For a file no separator fits: the columns it most likely has, and a hint when that is not by commas."""
    guess = max(DELIMITERS, key=lambda d: len(found[d]))  # the first of equals: the comma
    return found[guess], (f" (this file seems to be separated by {SHOWN[guess]})" if guess != "," else "")


def decimal_comma(value: str, delimiter: str) -> str:
    """'55,5' -> '55.5' in a file separated by ';' or tabs, as a spreadsheet writes a decimal there."""
    return value.replace(",", ".") if delimiter != "," and value.replace(",", "", 1).isdigit() else value


@dataclass
class Table:
    rows: list[tuple[int, dict[str, str]]]  # (the file's line number, cells by column name, both stripped)
    columns: list[str]  # the header's names, stripped, in their own case
    delimiter: str
    warnings: list[str]  # what the user should check (a file read as cp1252)


def read_table(data: bytes, path, fits: Callable[[list[str]], bool], missing: Callable[[list[str], str], str],
               error: type[Exception] = ValueError) -> Table:
    """A CSV file's rows, by the separator whose lower-cased column names `fits` accepts. `missing(columns, hint)`:
    the message (after the file's name) when none does. Line numbers are the file's own, as an editor shows them
    (blank lines and quoted line breaks count); cells beyond the header's are left out."""
    text, warnings = decode_bytes(data, path, error)
    found = headers(text, path, error)
    delimiter = delimiter_that_fits(found, fits)
    if delimiter is None:
        raise error(f"{path}: {missing(*likely(found))}")
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        reader.fieldnames = found[delimiter] if reader.fieldnames is not None else None
        rows = [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}) for row in reader]
    except csv.Error as e:
        raise error(f"{path} line {reader.line_num}: not a readable CSV file ({e})") from None
    return Table(rows, found[delimiter], delimiter, warnings)
