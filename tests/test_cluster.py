"""dermalens predict --cluster: a real Dask cluster on loopback (worker processes, one thread each).

Rows match the single-process predict; an interrupted run resumes with every image exactly once; a
bad image is a row with its error; a worker killed mid-run loses and duplicates nothing."""
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import FIXTURES, MINI, REPO
from dermalens.cli import main
from dermalens.cluster.inputs import Item, collect_inputs, plan_partitions, read_manifest, rename_clashes
from dermalens.cluster.store import OutFolder, rows_to_table
from dermalens.inference.metadata import MetadataError, PatientMetadata

IMAGES = sorted((MINI / "images").glob("*.jpg"))


def table_rows(out: Path) -> list[dict]:
    files = sorted(out.glob("part-*.parquet"))
    schemas = {tuple(pq.read_schema(f).names) for f in files}
    assert len(schemas) <= 1, schemas  # one schema: any Parquet reader takes the folder as one table
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def assert_each_once(rows, expected: list[str]):
    files = [r["file"] for r in rows]
    assert len(files) == len(set(files)), "an image was written twice"
    assert sorted(files) == sorted(expected)


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as c, Client(c) as client:
        yield c, client


# ---- planning and storage (no cluster) ----------------------------------------------------------

def test_partitions_keep_their_ids_when_a_rerun_drops_the_done_ones():
    items = [Item(f"img{i}.jpg") for i in range(10)]
    first = plan_partitions(items, set(), 4)
    assert [len(p.items) for p in first] == [4, 4, 2]
    done = {it.key for it in first[1].items}
    again = plan_partitions(items, done, 4)
    assert [p.id for p in again] == [first[0].id, first[2].id]  # same ids: a late write replaces, never adds
    with pytest.raises(ValueError, match="at least 1"):
        plan_partitions(items, set(), 0)


def test_manifest_paths_and_ids_carry_their_extra_columns(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(IMAGES[0].read_bytes())
    m = tmp_path / "m.csv"
    m.write_text("image_id,age,sex\na,40,female\nzzz,50,male\n")
    items = read_manifest(str(m))
    assert items[0] == Item(str(tmp_path / "images" / "a.jpg"), {"image_id": "a", "age": "40", "sex": "female"},
                            PatientMetadata(40.0, "female", None))  # read as --metadata reads it
    assert items[1].key == str(tmp_path / "zzz")  # not found: reported when read, as a row with its error
    p = tmp_path / "p.csv"
    p.write_text("path,site\nimages/a.jpg,back\nimages/a.jpg,back\n")
    items, problems = collect_inputs([str(p)])
    assert items == [Item(str(tmp_path / "images" / "a.jpg"), {"site": "back"}, PatientMetadata(site="back"))]
    assert "more than once" in problems[0]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,x\na.jpg,1\n")
    with pytest.raises(ValueError, match="'path' or 'image_id'"):
        read_manifest(str(bad))


def test_out_folder_refuses_another_model_and_writes_whole_files(tmp_path):
    out = OutFolder(str(tmp_path / "o"))
    out.prepare({"model": "m", "version": "1", "tta": False})
    with pytest.raises(ValueError, match="another --out folder"):
        out.prepare({"model": "m", "version": "2", "tta": False})
    (tmp_path / "o" / ".part-x.123.tmp").write_bytes(b"half a file")  # what a killed writer leaves
    out.prepare({"model": "m", "version": "1", "tta": False})
    assert not list((tmp_path / "o").glob(".part-*"))
    out.write_partition("abc", [{"file": "a", "p": 0.5, "error": None}, {"file": "b", "error": "bad"}])
    assert [p.name for p in (tmp_path / "o").iterdir() if p.name != "_run.json"] == ["part-abc.parquet"]
    assert out.keys() == ({"a"}, {"b"})
    assert rows_to_table([{"a": 1}, {"b": "x"}]).column_names == ["a", "b"]


def test_one_image_is_one_key_however_it_is_named(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    img = tmp_path / "a" / "x.jpg"
    img.write_bytes(IMAGES[0].read_bytes())
    monkeypatch.chdir(tmp_path)
    items, problems = collect_inputs(["a/x.jpg", str(img), f"file://{img}", f"file://{tmp_path}/a"])
    assert [it.key for it in items] == [str(img)]  # absolute: a worker in another folder finds it too
    assert len(problems) == 3 and all("more than once" in p for p in problems)


def test_manifest_problems_name_the_file_and_line(tmp_path, capsys):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("Path;Site;Age;note\nx.jpg;back;55,5;café\n".encode("latin-1"))  # as Excel saves it in France
    (item,) = read_manifest(str(latin))
    assert item.key == str(tmp_path / "x.jpg") and item.extra["note"] == "café"
    assert (item.patient.site, item.patient.age) == ("back", 55.5)
    assert "latin.csv is not UTF-8" in capsys.readouterr().err
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"path\n\x00\x81\xff\n")
    with pytest.raises(ValueError, match="binary.csv line 2: not a text CSV file"):
        read_manifest(str(binary))
    (tmp_path / "cols.csv").write_text("file;age\nx.jpg;40\n")
    with pytest.raises(ValueError, match=r"needs a 'path' or 'image_id' column; found \['file', 'age'\] \(this file "
                                         r"seems to be separated by ';'\)"):
        read_manifest(str(tmp_path / "cols.csv"))
    bad_age = tmp_path / "age.csv"
    bad_age.write_text("path,age\nx.jpg,40\ny.jpg,forty\n")
    with pytest.raises(MetadataError, match="age.csv line 3: age must be"):
        read_manifest(str(bad_age))
    bad_age.write_text("path,age\nx.jpg,40\n\ny.jpg,forty\n")  # a blank line: the file's line 4
    with pytest.raises(MetadataError, match="age.csv line 4: age must be"):
        read_manifest(str(bad_age))


def test_manifest_columns_named_like_results_are_renamed():
    items = [Item("a", {"prediction": "mel", "confidence": "high", "age": "4"})]
    renamed, clash = rename_clashes(items, {"prediction", "confidence", "error"})
    assert clash == ["confidence", "prediction"]
    assert renamed[0].extra == {"input_prediction": "mel", "input_confidence": "high", "age": "4"}


def test_result_columns_are_the_columns_of_a_row(shipped_bundle):
    from dermalens.inference import Predictor
    from dermalens.predict import predict_files, result_columns
    predictor = Predictor(shipped_bundle)
    rows, _ = predict_files(predictor, IMAGES[:1])
    assert result_columns(predictor.bundle.codes)[:-1] == list(rows[0])  # then --explain's gradcam


def test_out_folder_refuses_unknown_partitions_and_unwritable_places(tmp_path):
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    OutFolder(str(orphan)).write_partition("abc", [{"file": "a", "error": None}])
    with pytest.raises(ValueError, match="no _run.json"):
        OutFolder(str(orphan)).prepare({"model": "m", "version": "1", "tta": True})
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="cannot write there"):
        OutFolder(str(a_file / "sub")).prepare({"model": "m"})


def test_failed_rows_are_dropped_so_a_rerun_retries_them(tmp_path):
    out = OutFolder(str(tmp_path / "o"))
    out.prepare({"model": "m"})
    out.write_partition("p1", [{"file": "a", "error": None}, {"file": "b", "error": "bad"}])
    out.write_partition("p2", [{"file": "c", "error": "gone"}])
    out.write_partition("p3", [{"file": "d", "error": "elsewhere"}])
    assert out.drop_failed_rows({"b", "c", "a"}) == 2  # only the images this run tries again
    assert out.keys() == ({"a"}, {"d"}) and len(out.partition_files()) == 2
    assert out.drop_failed_rows({"b", "c"}) == 0


def test_a_folder_of_an_older_dermalens_is_named_as_such(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "_run.json").write_text('{"model": "m", "version": "1", "tta": false}')
    with pytest.raises(ValueError, match="older dermalens"):
        OutFolder(str(tmp_path / "o")).prepare({"model": "m", "version": "1", "tta": False, "keys": "absolute"})


# ---- a real cluster --------------------------------------------------------------------------

@pytest.mark.slow
def test_local2_gives_the_single_process_rows(shipped_bundle, tmp_path):
    from dermalens.inference import Predictor
    from dermalens.predict import predict_files
    out, csv_path = tmp_path / "out", tmp_path / "all.csv"
    rc = main(["predict", str(MINI / "images"), "--model", str(shipped_bundle), "--cluster", "local:2",
               "--out", str(out), "--partition-size", "8", "--csv", str(csv_path)])
    assert rc == 0
    expected, errors = predict_files(Predictor(shipped_bundle), [str(p) for p in IMAGES])
    assert not errors
    got = {r["file"]: r for r in table_rows(out)}
    assert len(got) == len(expected) == len(IMAGES)
    for row in expected:
        g = got[row["file"]]
        assert g["error"] is None
        for k, v in row.items():
            if isinstance(v, float):
                assert abs(g[k] - v) <= 1e-6, (row["file"], k)
            else:
                assert g[k] == v, (row["file"], k)
    with open(csv_path) as f:
        assert [r["file"] for r in csv.DictReader(f)] == [r["file"] for r in expected]  # input order


@pytest.mark.slow
def test_bad_images_are_rows_with_their_error(shipped_bundle, cluster, tmp_path, capsys):
    _, client = cluster
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in IMAGES[:5]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    (folder / "empty.png").write_bytes(b"")
    manifest = tmp_path / "manifest.csv"
    names = [p.name for p in IMAGES[:5]] + ["broken.jpg", "empty.png", "missing.jpg"]
    manifest.write_text("path,age\n" + "".join(f"imgs/{n},{i}\n" for i, n in enumerate(names)))
    out = tmp_path / "out"
    rc = main(["predict", str(manifest), "--model", str(shipped_bundle), "--cluster", cluster[0].scheduler_address,
               "--out", str(out), "--partition-size", "3"])
    assert rc == 1  # some images failed, the job did not
    rows = {Path(r["file"]).name: r for r in table_rows(out)}
    assert sorted(rows) == sorted(names)
    for n in names[:5]:
        assert rows[n]["error"] is None and rows[n]["prediction"]
    for n in names[5:]:
        assert rows[n]["error"] and rows[n]["prediction"] is None  # every partition has every column
    assert "no such file" in rows["missing.jpg"]["error"]
    assert [rows[n]["age"] for n in names] == [str(i) for i in range(len(names))]  # manifest columns pass through
    assert "3 unreadable" in capsys.readouterr().err
    loads = client.run(lambda: __import__("dermalens.cluster.tasks", fromlist=["x"])._LOADS["count"])
    assert set(loads.values()) <= {0, 1}, loads  # each worker loaded the bundle at most once for 3 partitions


@pytest.mark.slow
def test_interrupted_run_resumes_with_every_image_once(shipped_bundle, cluster, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["predict", str(MINI / "images"), "--model", str(shipped_bundle), "--cluster",
            cluster[0].scheduler_address, "--out", str(out), "--partition-size", "4"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    client = subprocess.Popen([sys.executable, "-m", "dermalens.cli", *args], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("part-*.parquet"))) < 2 and client.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.poll() is None, "the run ended before it could be interrupted"
        client.send_signal(signal.SIGKILL)  # the client dies; tasks already running may still finish
    finally:
        client.wait()
    first = table_rows(out)
    assert 0 < len(first) < len(IMAGES)
    assert main(args) == 0
    err = capsys.readouterr().err
    skipped = int(err.split(" skipped")[0].rsplit(", ", 1)[-1])
    assert skipped >= len(first)
    assert_each_once(table_rows(out), [str(p) for p in IMAGES])


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(shipped_bundle, tmp_path):
    from distributed import Client, LocalCluster
    inputs = [str(MINI / "images"), str(FIXTURES / "fullres")]
    expected = [it.key for it in collect_inputs(inputs)[0]]
    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as c, Client(c) as client:
        result = {}
        run = threading.Thread(target=lambda: result.update(rc=main(
            ["predict", *inputs, "--model", str(shipped_bundle), "--cluster", c.scheduler_address,
             "--out", str(out), "--partition-size", "3"])))
        run.start()
        deadline = time.monotonic() + 120
        while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.02)
        busy = [w for w, tasks in client.processing().items() if tasks]
        assert busy and run.is_alive(), "no worker was busy to kill"
        pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
        os.kill(pid, signal.SIGKILL)
        run.join(timeout=300)
    assert not run.is_alive() and result["rc"] == 0
    rows = table_rows(out)
    assert_each_once(rows, expected)
    assert all(r["error"] is None for r in rows)


@pytest.mark.slow
def test_fsspec_urls_give_the_rows_of_local_paths(shipped_bundle):
    from dermalens.cluster.tasks import read_source
    from dermalens.inference import Predictor
    from dermalens.predict import predict_files
    urls = [f"file://{p}" for p in sorted((FIXTURES / "fullres").glob("*.jpg"))]
    predictor = Predictor(shipped_bundle)
    by_url, errors = predict_files(predictor, urls + ["file:///nowhere/x.jpg"], read=read_source)
    local, _ = predict_files(predictor, sorted((FIXTURES / "fullres").glob("*.jpg")))
    assert [{**r, "file": None} for r in by_url] == [{**r, "file": None} for r in local]
    assert len(errors) == 1 and errors[0]["file"] == "file:///nowhere/x.jpg" and "cannot read" in errors[0]["error"]


@pytest.mark.slow
def test_reruns_know_images_by_absolute_path_and_retry_failures(shipped_bundle, cluster, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for folder, srcs in ((a, IMAGES[:2]), (b, IMAGES[2:4])):
        for name, src in zip(("x.jpg", "y.jpg"), srcs):
            (folder / name).write_bytes(src.read_bytes())
    (b / "y.jpg").write_bytes(b"not yet an image")
    out = tmp_path / "out"
    common = ["--model", str(shipped_bundle), "--cluster", cluster[0].scheduler_address, "--out", str(out)]
    assert main(["predict", str(a), *common]) == 0
    assert main(["predict", str(b), *common]) == 1  # same names, other images: predicted, not skipped
    expected = [str(f / n) for f in (a, b) for n in ("x.jpg", "y.jpg")]
    assert_each_once(table_rows(out), expected)
    assert main(["predict", str(a), *common]) == 0  # another folder's run leaves b's error row alone
    assert [r["file"] for r in table_rows(out) if r["error"]] == [str(b / "y.jpg")]
    (b / "y.jpg").write_bytes(IMAGES[3].read_bytes())
    assert main(["predict", str(b), *common]) == 0  # the failed image is tried again
    rows = table_rows(out)
    assert_each_once(rows, expected)
    assert all(r["error"] is None for r in rows)


@pytest.mark.slow
def test_manifest_patient_details_and_clashing_columns(shipped_bundle, cluster, tmp_path, capsys):
    for p in IMAGES[:2]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,age,sex,localization,prediction,confidence\n"
                        f"{IMAGES[0].name},45,male,back,nv,0.9\n{IMAGES[1].name},,,,mel,0.8\nmissing.jpg,50,,,bcc,0.7\n")
    out, table = tmp_path / "out", tmp_path / "all.csv"
    common = ["--model", str(shipped_bundle), "--cluster", cluster[0].scheduler_address]
    assert main(["predict", str(manifest), *common, "--out", str(out), "--csv", str(manifest)]) == 2
    assert "replace it" in capsys.readouterr().err and not out.exists()  # refused before anything was written
    assert main(["predict", str(manifest), *common, "--out", str(out), "--csv", str(table)]) == 1
    assert "written as input_confidence, input_prediction" in capsys.readouterr().err
    rows = {Path(r["file"]).name: r for r in table_rows(out)}
    first, second, missing = rows[IMAGES[0].name], rows[IMAGES[1].name], rows["missing.jpg"]
    assert first["metadata_used"] is True and second["metadata_used"] is False
    assert (first["input_prediction"], missing["input_confidence"]) == ("nv", "0.7")
    assert missing["error"] and missing["prediction"] is None and missing["confidence"] is None
    one = tmp_path / "one"
    assert main(["predict", str(tmp_path / IMAGES[1].name), *common, "--out", str(one), "--age", "60"]) == 0
    assert table_rows(one)[0]["metadata_used"] is True


def test_csv_naming_the_metadata_file_is_refused_before_the_cluster_is_asked(tmp_path, capsys):
    (tmp_path / IMAGES[0].name).write_bytes(IMAGES[0].read_bytes())
    meta = tmp_path / "meta.csv"
    meta.write_text(f"image_id,age\n{IMAGES[0].stem},50\n")
    code = main(["predict", str(tmp_path / IMAGES[0].name), "--cluster", "tcp://127.0.0.1:9", "--out",
                 str(tmp_path / "out"), "--metadata", str(meta), "--csv", str(meta)])
    assert code == 2 and "metadata" in capsys.readouterr().err
    assert meta.read_text() == f"image_id,age\n{IMAGES[0].stem},50\n"


def test_an_out_folder_holding_other_files_is_refused_as_one_table_would_break(tmp_path):
    """An --out holding the input images (or anything else) made `pandas.read_parquet(out)` fail on them."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(IMAGES[0].read_bytes())
    with pytest.raises(ValueError, match=r"holds other files \(a.jpg\)"):
        OutFolder(str(images)).prepare({"model": "m", "version": "1", "tta": False})
    own = tmp_path / "results"
    own.mkdir()
    (own / ".DS_Store").write_bytes(b"")  # skipped by Parquet readers, as _run.json is
    OutFolder(str(own)).prepare({"model": "m", "version": "1", "tta": False})
    assert sorted(p.name for p in own.iterdir()) == [".DS_Store", "_run.json"]


def test_csv_inside_the_out_folder_is_refused_before_the_cluster_is_asked(tmp_path, capsys):
    (tmp_path / IMAGES[0].name).write_bytes(IMAGES[0].read_bytes())
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / IMAGES[0].name), "--cluster", "tcp://127.0.0.1:9", "--out", str(out),
                 "--csv", str(out / "all.csv")])
    assert code == 2 and "inside the --out folder" in capsys.readouterr().err and not out.exists()
