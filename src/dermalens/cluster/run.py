"""The client side: plan partitions, submit them, show progress, then the summary and figures."""
from __future__ import annotations

import csv
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from .inputs import Item, canonical_key, collect_inputs, is_url, plan_partitions, rename_clashes
from .store import OutFolder
from .tasks import predict_partition

DEFAULT_PARTITION_SIZE = 256  # images per task: seconds of work, few enough files for an archive


def local_workers(spec: str) -> int | None:
    """`local:N` -> N; `local` -> None (one per core); a scheduler address -> 0."""
    if spec != "local" and not spec.startswith("local:"):
        return 0
    try:
        n = int(spec.split(":", 1)[1]) if ":" in spec else None
    except ValueError:
        raise ValueError(f"--cluster local:N needs a number of workers, got {spec!r}") from None
    if n is not None and n < 1:
        raise ValueError(f"--cluster local:N needs at least 1 worker, got {n}")
    return n


@contextmanager
def connect(spec: str):
    """`local:N` starts N single-threaded worker processes here; anything else is the address of a
    running scheduler (tcp://host:8786)."""
    from distributed import Client, LocalCluster
    n = local_workers(spec)
    if n != 0:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=40) as cluster, Client(cluster) as client:
            yield client
    else:
        try:
            client = Client(spec, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise ValueError(f"--cluster {spec}: no Dask scheduler answers there ({e})") from None
        with client:
            yield client


def dashboard(client) -> str:
    def has_bokeh():
        import importlib.util
        return importlib.util.find_spec("bokeh") is not None
    if not client.dashboard_link:
        return "none"
    if not client.run_on_scheduler(has_bokeh):
        return "none (bokeh is not installed where the scheduler runs)"
    return client.dashboard_link


def run_cluster_predict(a) -> int:
    from .. import DISCLAIMER
    from ..inference.bundle import read_card
    from ..predict import result_columns
    if not a.out:
        raise ValueError("--cluster needs --out FOLDER (or URL) for the Parquet partitions")
    for flag in ("explain", "json"):
        if getattr(a, flag, None):
            raise ValueError(f"--{flag} is not available with --cluster; the Parquet files hold every row")
    local_workers(a.cluster)  # a bad --cluster fails before anything is written
    model = Path(a.model).resolve()
    card = read_card(model)  # a bad bundle fails here, before any worker starts
    items, problems = collect_inputs(a.inputs, getattr(a, "recursive", False))
    check_csv(a, items)
    items, renamed = rename_clashes(items, {*result_columns([c["code"] for c in card["classes"]]), "error"})
    if renamed:
        problems.append(f"manifest column(s) {', '.join(renamed)} share a name with result columns; "
                        f"written as {', '.join('input_' + k for k in renamed)}")
    items = with_patient_details(a, items, card)
    for msg in problems:
        print(f"warning: {msg}", file=sys.stderr)
    columns = tuple(dict.fromkeys(k for it in items for k in it.extra))  # every partition gets all of them
    out = OutFolder(a.out)
    out.prepare({"model": card["name"], "version": card["version"], "tta": bool(a.tta), "keys": "absolute",
                 "input_columns": list(columns)})
    wanted = {it.key for it in items}
    done, failed_before = out.keys()
    retry = wanted & failed_before  # an image that failed last time is tried again
    skipped = len(wanted & done)
    size = DEFAULT_PARTITION_SIZE if a.partition_size is None else a.partition_size
    parts = plan_partitions(items, done, size)
    results, failed_parts = [], []
    if parts:
        with connect(a.cluster) as client:
            if retry:  # only once the cluster answers: a run that never starts keeps the old error rows
                out.drop_failed_rows(retry)
                print(f"retrying {len(retry)} image(s) that failed in an earlier run", file=sys.stderr)
            results, failed_parts, wall = _run(client, parts, model, a, out, columns)
    else:
        wall = 0.0
    _summary(results, failed_parts, skipped, wall, len(parts))
    if a.csv:
        n = write_csv(out, a.csv, [it.key for it in items])
        print(f"{n} rows written to {a.csv}", file=sys.stderr)
    print(f"\n{DISCLAIMER}")
    predicted = sum(r["images"] - len(r["failed"]) for r in results)
    if not predicted and not skipped:
        return 2
    return 1 if failed_parts or any(r["failed"] for r in results) else 0


def check_csv(a, items) -> None:
    """--csv is checked as in-process predict checks it, before any work: never an input image or
    manifest, never a folder, never inside --out."""
    from ..predict import check_outputs
    if not a.csv or is_url(a.csv):
        return
    if a.out and not is_url(a.out) and Path(a.csv).resolve().is_relative_to(Path(a.out).resolve()):
        raise ValueError(f"--csv {a.csv}: is inside the --out folder, whose files any Parquet reader takes as one "
                         "table; write it beside that folder")
    manifests = [Path(t) for t in a.inputs if t.lower().endswith(".csv") and not is_url(t)]
    check_outputs(a.inputs, manifests, a.csv, None, None, metadata=a.metadata)  # a folder, a missing one, a manifest, --metadata
    if canonical_key(a.csv) in {it.key for it in items}:  # keys are absolute already: no stat per image
        raise ValueError(f"--csv {a.csv}: is one of the input images; writing there would replace it")


def with_patient_details(a, items, card) -> list:
    """Each image's patient details: --age/--sex/--site (one image), else --metadata FILE.csv, else the
    manifest's own age/sex/site columns, field by field, as in-process predict reads them."""
    from ..predict import patient_metadata
    given = patient_metadata(a, [it.key for it in items])
    out = []
    for it in items:
        first = given.get(it.key)
        out.append(Item(it.key, it.extra, first.over(it.patient) if first is not None else it.patient))
    if any(it.patient for it in out) and "metadata" not in card:
        print("warning: this model has no metadata model; the patient details are not used", file=sys.stderr)
    return out


def _run(client, parts, model: Path, a, out: OutFolder, columns: tuple[str, ...]):
    from distributed import as_completed
    workers = client.scheduler_info()["workers"].values()
    per_host = defaultdict(int)
    for w in workers:
        per_host[w["host"]] += w["nthreads"]
    print(f"cluster: {a.cluster}: {len(workers)} workers, {sum(w['nthreads'] for w in workers)} threads; "
          f"dashboard: {dashboard(client)}", file=sys.stderr)
    t0 = time.perf_counter()
    # pure=False and a per-partition key: a partition is one task, rescheduled if its worker dies
    futures = [client.submit(predict_partition, p, str(model), bool(a.tta), out.url, dict(per_host), columns,
                             key=f"dermalens-predict-{p.id}", pure=False, retries=1) for p in parts]
    sizes = {f.key: len(p.items) for f, p in zip(futures, parts)}
    results, failed = [], []
    bar = tqdm(total=sum(sizes.values()), unit="img", desc="predict", file=sys.stderr)
    try:
        for fut in as_completed(futures):
            if fut.status == "finished":
                r = fut.result()
                results.append(r)
                for e in r["failed"]:
                    tqdm.write(f"failed {e['error']}", file=sys.stderr)
            else:
                failed.append((fut.key, repr(fut.exception()) if fut.status == "error" else fut.status))
                tqdm.write(f"partition {fut.key} failed: {failed[-1][1]}", file=sys.stderr)
            bar.update(sizes[fut.key])
            fut.release()
    except KeyboardInterrupt:
        bar.close()
        done = len(results)
        print(f"\ninterrupted: {done} of {len(parts)} partitions reported written to {out.url} (those in "
              "flight may still land); the same command resumes", file=sys.stderr)
        raise
    bar.close()
    return results, failed, time.perf_counter() - t0


def _summary(results, failed_parts, skipped: int, wall: float, n_parts: int) -> None:
    images = sum(r["images"] for r in results)
    bad = [e for r in results for e in r["failed"]]
    print(f"done: {images - len(bad)} predicted, {len(bad)} unreadable (rows with their error), "
          f"{skipped} skipped (already in the output folder), {len(failed_parts)} of {n_parts} "
          "partitions failed (rerun to retry them)", file=sys.stderr)
    for e in bad[:20]:
        print(f"  unreadable: {e['error']}", file=sys.stderr)
    if len(bad) > 20:
        print(f"  ... and {len(bad) - 20} more (the 'error' column of the Parquet files)", file=sys.stderr)
    for key, why in failed_parts:
        print(f"  partition {key}: {why}", file=sys.stderr)
    if not results:
        return
    print(f"speed: {images / wall:.1f} images/s overall ({images} images in {wall:.1f} s wall)", file=sys.stderr)
    per_worker = defaultdict(lambda: [0, 0.0, 0.0])
    for r in results:
        w = per_worker[f"{r['worker']} (pid {r['pid']})"]
        w[0] += r["images"]
        w[1] += r["seconds"]
        w[2] += r["load_seconds"]
    for name, (n, busy, load) in sorted(per_worker.items()):
        print(f"  {name}: {n / busy if busy else 0:.1f} images/s while busy ({n} images, "
              f"{busy:.1f} s; bundle load {load:.1f} s)", file=sys.stderr)


def write_csv(out: OutFolder, path: str, order: list[str]) -> int:
    """Every row in the folder as one CSV, in the order of the inputs (then any others)."""
    table = out.read_all()
    rows = table.to_pylist() if table is not None else []
    rank = {k: i for i, k in enumerate(order)}
    rows.sort(key=lambda r: rank.get(r["file"], len(rank)))
    import fsspec
    with fsspec.open(path, "w", newline="") as f:  # written even when empty: an older CSV there is not this run's
        if table is not None:
            w = csv.DictWriter(f, fieldnames=table.column_names)
            w.writeheader()
            w.writerows(rows)
    return len(rows)


__all__ = ["run_cluster_predict", "connect", "write_csv"]
