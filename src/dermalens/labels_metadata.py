"""A labels CSV's own patient columns (age, sex, localization or site, as HAM10000_metadata.csv has them) read as
the metadata of its images, from the rows the labels reader already read: `dermalens evaluate --labels` and the
desktop app's batch view read the file once."""
from __future__ import annotations

from typing import NamedTuple

from .csvfiles import PATIENT_COLUMNS, decimal_comma
from .inference.metadata import MetadataError, PatientMetadata, parse_age, parse_sex, parse_site


class LabelsMetadata(NamedTuple):
    table: dict[str, PatientMetadata]  # image_id (as the CSV lists it) -> its patient details
    columns: list[str]  # the patient columns the file has, in PATIENT_COLUMNS' order
    left_out: list[str]  # 'line N: why', a value dermalens does not read, taken as not given


def labels_metadata(records) -> LabelsMetadata | None:
    """The patient details of `records` (data.Records: their rows, columns and separator) by image id; None
    when the file has no patient column. A value dermalens does not read is left out (not given) and named in
    `left_out`; what to make of it is the caller's choice."""
    columns = [c for c in PATIENT_COLUMNS if c in records.columns]
    if not columns:
        return None
    table, left_out = {}, []
    for r in records:
        line, row = records.rows[r.image_id]
        age = decimal_comma(row.get("age", ""), records.delimiter)
        values = {}
        for field, parse, value in (("age", parse_age, age), ("sex", parse_sex, row.get("sex")),
                                    ("site", parse_site, row.get("site") or row.get("localization"))):
            try:
                values[field] = parse(value)
            except MetadataError as e:
                values[field] = None
                left_out.append(f"line {line}: {e}")
        table[r.image_id] = PatientMetadata(**values)
    return LabelsMetadata(table, columns, left_out)
