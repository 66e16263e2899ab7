"""The output folder: one Parquet file per partition, written so that a kill never leaves half a file.

Local (or shared POSIX) folders: write a hidden temporary file, then rename it (atomic on one
filesystem). Object stores: one PUT of the whole file, which readers see complete or not at all.
"""
from __future__ import annotations

import fnmatch
import io
import json
import os
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PART_GLOB = "part-*.parquet"
RUN_FILE = "_run.json"  # which model and options wrote the partitions


class OutFolder:
    def __init__(self, url: str):
        import fsspec
        self.url = str(url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = "file" in _protocols(self.fs)

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def prepare(self, run: dict) -> None:
        """Create the folder; refuse to mix results of another model or options into it."""
        try:
            self._prepare(run)
        except OSError as e:  # a file where the folder should be, no permission, a full disk...
            raise ValueError(f"--out {self.url}: cannot write there ({e})") from None

    def _prepare(self, run: dict) -> None:
        self.fs.makedirs(self.root, exist_ok=True)
        foreign = self.foreign_entries()
        if foreign:
            raise ValueError(f"{self.url} holds other files ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): "
                             "the Parquet partitions need a folder of their own, which any Parquet reader takes as "
                             "one table; choose another --out folder")
        if self.fs.exists(self.path(RUN_FILE)):
            try:
                old = json.loads(self.fs.cat_file(self.path(RUN_FILE)))
            except ValueError:
                old = "an unreadable _run.json"
            if old != run and isinstance(old, dict) and "keys" not in old and "keys" in run:
                raise ValueError(f"{self.url} was written by an older dermalens, which named images by relative "
                                 "path, so a rerun cannot tell which are done: choose another --out folder (or "
                                 "empty this one)")
            if old != run:
                raise ValueError(f"{self.url} holds results of {old}, not {run}: "
                                 "choose another --out folder (or empty this one)")
        elif self.partition_files():
            raise ValueError(f"{self.url} holds partitions but no {RUN_FILE}, so which model and options wrote "
                             "them is unknown: choose another --out folder (or empty this one)")
        else:
            self.fs.pipe_file(self.path(RUN_FILE), json.dumps(run, indent=2).encode())
        if self.local:  # temporaries of killed writers; never read, removed here
            for p in self.fs.glob(self.path(".part-*.tmp")):
                self.fs.rm_file(p)

    def foreign_entries(self) -> list[str]:
        """Names in the folder that are not this store's: a Parquet reader would take them for part of the table.
        Names starting with '.' or '_' are left alone, as Parquet readers skip them (.DS_Store, _run.json)."""
        names = sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in self.fs.ls(self.root, detail=False))
        return [n for n in names if not n.startswith((".", "_")) and not fnmatch.fnmatch(n, PART_GLOB)]

    def partition_files(self) -> list[str]:
        return sorted(self.fs.glob(self.path(PART_GLOB)))

    def keys(self) -> tuple[set[str], set[str]]:
        """(images with a result row, images with only an error row): a rerun skips the first, retries the second."""
        done, failed = set(), set()
        for p in self.partition_files():
            t = self._read(p, columns=["file", "error"])  # every partition has both (tasks.predict_partition)
            for key, error in zip(t.column("file").to_pylist(), t.column("error").to_pylist()):
                (failed if error else done).add(key)
        return done, failed - done

    def drop_failed_rows(self, keys: set[str]) -> int:
        """Remove the error rows of these images, just before they are tried again, so an image stays in one row
        (error rows of images this run does not retry stay). Returns how many were removed."""
        dropped = 0
        for p in self.partition_files():
            table = self._read(p)
            if "error" not in table.column_names:
                continue
            retried = pc.and_(pc.invert(pc.is_null(table.column("error"))),
                              pc.is_in(table.column("file"), value_set=pa.array(sorted(keys), pa.string())))
            kept = table.filter(pc.invert(retried))
            if kept.num_rows == table.num_rows:
                continue
            dropped += table.num_rows - kept.num_rows
            if kept.num_rows:
                self._put(p, kept)
            else:
                self.fs.rm_file(p)
        return dropped

    def read_all(self) -> pa.Table | None:
        tables = [self._read(p) for p in self.partition_files()]
        return pa.concat_tables(tables, promote_options="permissive") if tables else None

    def _read(self, p: str, columns=None) -> pa.Table:
        try:
            return pq.read_table(p, filesystem=self.fs, columns=columns)
        except (OSError, pa.ArrowException) as e:
            raise ValueError(f"{p}: unreadable partition ({e}); delete it and rerun to redo its images") from None

    def write_partition(self, part_id: str, rows: list[dict], types: dict | None = None) -> str:
        final = self.path(f"part-{part_id}.parquet")
        self._put(final, rows_to_table(rows, types))
        return final

    def _put(self, final: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        if self.local:
            tmp = self.path(f".part-{uuid.uuid4().hex}.tmp")
            with open(tmp, "wb") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)  # a rerun of the same partition replaces it: never two copies
        else:
            self.fs.pipe_file(final, buf.getvalue())


def rows_to_table(rows: list[dict], types: dict | None = None) -> pa.Table:
    """Rows with differing keys (results, errors) -> one table: the columns of `types` (name ->
    arrow type) first, so that a partition of errors only has the same schema as the others, then
    any other key in first-seen order; a value a row lacks is null."""
    types = types or {}
    columns = list(dict.fromkeys([*types, *(k for r in rows for k in r)]))
    return pa.table({c: pa.array([r.get(c) for r in rows], type=types.get(c)) for c in columns})


def _protocols(fs) -> tuple:
    p = fs.protocol
    return p if isinstance(p, tuple) else (p,)
