"""The Tkinter app in a real window under Xvfb: single image, batch with labels, remote mode."""
import shutil
import time

import pytest

from conftest import FIXTURES, MINI
from serverutil import running_server

pytestmark = pytest.mark.slow


def pump(root, until, timeout=120):
    deadline = time.time() + timeout
    while not until():
        root.update()
        time.sleep(0.02)
        assert time.time() < deadline, "the window did not finish in time"
    for _ in range(10):
        root.update()
        time.sleep(0.01)


def screenshot(display, path, window=None):
    """The test display, or only `window` (a Tk toplevel) on it."""
    from PIL import ImageGrab
    bbox = None if window is None else (window.winfo_rootx(), window.winfo_rooty(),
                                        window.winfo_rootx() + window.winfo_width(),
                                        window.winfo_rooty() + window.winfo_height())
    ImageGrab.grab(bbox=bbox, xdisplay=display).save(path)


@pytest.fixture()
def app_factory(display, monkeypatch):
    import tkinter as tk
    from tkinter import messagebox

    from dermalens.gui.app import App
    shown = []
    monkeypatch.setattr(messagebox, "showerror", lambda *a, **k: shown.append(a[1]))
    roots = []

    def make(**kw):
        root = tk.Tk()
        roots.append(root)
        return App(root, **kw), shown
    yield make
    for r in roots:
        r.destroy()
    roots.clear()
    # Tk variables and images must die here, on the main thread: left to a later garbage collection on a
    # worker thread they raise "main thread is not in main loop" from their __del__
    import gc
    gc.collect()


def test_single_image_and_batch_match_evaluate(app_factory, shipped_bundle, display, artifacts,
                                               in_distribution_lesion):
    from dermalens.data import load_dataset
    from dermalens.evaluate.run import evaluate_records
    from dermalens.gui.batch import metrics_text
    from dermalens.inference import Predictor
    app, errors = app_factory(model=str(shipped_bundle))
    path = in_distribution_lesion
    app.open_image(path)
    pump(app.root, lambda: not app.busy)
    assert not errors
    expected = Predictor(shipped_bundle).predict(path)
    assert app.top_label.cget("text").startswith(expected.names[expected.top])
    assert app.bars[expected.codes[expected.top]][2].cget("text") == f"{100 * expected.probabilities[expected.top]:.1f} %"
    assert app.risk_label.cget("text") == f"Risk: {expected.risk}"
    app.heat.set(True)
    app._show_image()
    pump(app.root, lambda: True)
    screenshot(display, artifacts / "gui_single.png")
    app.tta.set(True)  # the four flips averaged, as `dermalens predict --tta` gives
    app.open_image(path)
    pump(app.root, lambda: not app.busy)
    steady = Predictor(shipped_bundle).predict(path, tta=True)
    assert app.result["tta"] is True and not errors and "4 views averaged" in app.status.cget("text")
    assert app.bars[steady.codes[steady.top]][2].cget("text") == f"{100 * steady.probabilities[steady.top]:.1f} %"
    app.tta.set(False)

    app.notebook.select(1)
    app.start_batch(str(MINI / "images"), str(MINI / "HAM10000_metadata.csv"))
    pump(app.root, lambda: str(app.start_button.cget("state")) != "disabled")
    assert len(app.tree.get_children()) == 49
    # the labels CSV carries age, sex and localization, so the batch uses them, as evaluate with metadata does;
    # the batch view scores only the images it assessed (no diagnosis is shown for the others)
    from dermalens.inference.metadata import read_metadata_csv
    predictor = Predictor(shipped_bundle)
    assessed = [r for r in load_dataset(MINI / "HAM10000_metadata.csv") if predictor.predict(r.path).in_distribution]
    reference = evaluate_records(predictor, assessed, progress=False,
                                 metadata=read_metadata_csv(MINI / "HAM10000_metadata.csv"),
                                 subgroups=False)["metrics"]["with_metadata"]
    shown = app.metrics_box.get("1.0", "end").strip()
    assert metrics_text(reference).strip() in shown
    screenshot(display, artifacts / "gui_batch.png")
    out = artifacts / "gui_batch.csv"
    app.export(str(out))
    assert out.read_text().count("\n") == 50
    app.sort_by("confidence")
    shown = [app.tree.item(i)["values"][3] for i in app.tree.get_children()]
    scores = [float(v) for v in shown if v != "-"]  # "-": not assessed, sorted last
    assert scores == sorted(scores, reverse=True) and shown[:len(scores)] == [v for v in shown if v != "-"]


def test_patient_details_reach_the_model(app_factory, shipped_bundle, display, artifacts, in_distribution_lesion):
    """The optional fields give `dermalens predict --age --sex --site`'s result, and the window says they were used;
    a wrong age is an error message, not a crash."""
    from dermalens.inference import Predictor
    from dermalens.inference.metadata import PatientMetadata
    app, errors = app_factory(model=str(shipped_bundle))
    app.age_var.set("65")
    app.sex_var.set("male")
    app.site_var.set("back")
    app.open_image(in_distribution_lesion)
    pump(app.root, lambda: not app.busy)
    assert not errors and app.result["metadata"]["used"] is True
    expected = Predictor(shipped_bundle).predict(in_distribution_lesion, metadata=PatientMetadata(65.0, "male", "back"))
    assert app.bars[expected.codes[expected.top]][2].cget("text") == f"{100 * expected.probabilities[expected.top]:.1f} %"
    assert "patient details used" in app.malignancy_label.cget("text")
    screenshot(display, artifacts / "gui_patient_details.png")
    app.age_var.set("two hundred")
    app.open_image(in_distribution_lesion)
    pump(app.root, lambda: not app.busy)
    assert errors and "age must be a number" in errors[-1]


def test_out_of_distribution_warning(app_factory, shipped_bundle, display, artifacts, tmp_path):
    from PIL import Image
    from skimage import data
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    app, errors = app_factory(model=str(shipped_bundle))
    app.open_image(photo)
    pump(app.root, lambda: not app.busy)
    assert app.top_label.cget("text") == "Not assessed"
    assert app.risk_label.cget("text") == "Risk: indeterminate"
    assert app.ood_label.winfo_ismapped() and not app.assessment.winfo_ismapped()
    screenshot(display, artifacts / "gui_ood.png")


def test_a_phone_photo_is_refused_with_the_reason_in_words(app_factory, shipped_bundle, display, artifacts):
    from conftest import FIXTURES
    phone = sorted((FIXTURES / "modality" / "pad_ufes_20").glob("*.jpg"))[0]
    app, errors = app_factory(model=str(shipped_bundle))
    app.open_image(phone)
    pump(app.root, lambda: not app.busy)
    assert not errors and app.top_label.cget("text") == "Not assessed"
    assert "ordinary photo, not a dermoscopic image" in app.ood_label.cget("text")
    assert app.ood_label.winfo_ismapped() and not app.assessment.winfo_ismapped()  # no bars, no score
    assert app.risk_label.cget("text") == "Risk: indeterminate"
    screenshot(display, artifacts / "gui_not_dermoscopic.png")


def test_errors_are_shown_not_crashing(app_factory, shipped_bundle, tmp_path):
    app, errors = app_factory(model=str(shipped_bundle))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    app.open_image(bad)
    assert errors and "broken.jpg" in errors[-1]
    app.start_batch(str(tmp_path / "no-such-folder"))
    assert "folder not found" in errors[-1]
    assert app.root.winfo_exists()
    app2, errors2 = app_factory(model=str(tmp_path / "no-model"))
    assert "cannot load the model" in errors2[-1]
    app2.open_image(sorted((MINI / "images").iterdir())[0])
    assert "no model loaded" in app2.status.cget("text")


def test_remote_mode_against_a_real_server(app_factory, shipped_bundle, display, artifacts):
    with running_server(shipped_bundle) as url:
        app, errors = app_factory(api=url)
        assert app.backend.description.startswith(f"server {url}")
        app.open_image(sorted((MINI / "images").iterdir())[2])
        pump(app.root, lambda: not app.busy)
        assert not errors and app.result["success"]
        screenshot(display, artifacts / "gui_remote.png")
    app2, errors2 = app_factory(api="http://127.0.0.1:9")
    assert "cannot reach the dermalens server" in errors2[-1]


def test_a_server_without_a_model_is_named_as_such_not_unreachable(tmp_path):
    from dermalens.gui.backend import BackendError, RemoteBackend
    with running_server(tmp_path / "no-such-bundle") as url:  # /health answers 503
        with pytest.raises(BackendError, match="has no model loaded .*not found"):
            RemoteBackend(url)


class _NoPredictions:
    """A backend for checks that must stop before any image is classified."""
    description = "test backend"

    def predict(self, *a, **k):
        raise AssertionError("nothing should be classified")


def _labelled_set(root, n=3, layout="images", dx=None):
    """`root/labels.csv` listing n fixture images, which sit in root/images/ (or beside the CSV)."""
    import csv
    rows = {r["image_id"]: r["dx"] for r in csv.DictReader(open(MINI / "HAM10000_metadata.csv"))}
    images = sorted((MINI / "images").iterdir())[:n]
    where = root / "images" if layout == "images" else root
    where.mkdir(parents=True, exist_ok=True)
    for p in images:
        shutil.copy(p, where / p.name)
    (root / "labels.csv").write_text("image_id,dx\n" + "".join(f"{p.stem},{dx or rows[p.stem]}\n" for p in images))
    return images


def test_labels_csv_beside_an_images_folder_is_read_as_documented(app_factory, shipped_bundle, tmp_path):
    """docs/cli.md: a labels CSV's images sit beside it or in images/; choosing the folder holding both works."""
    from dermalens.gui.batch import batch_items
    images = _labelled_set(tmp_path / "set", layout="images")
    items = batch_items(tmp_path / "set", tmp_path / "set" / "labels.csv")
    assert [p.name for p, *_ in items] == [p.name for p in images] and not items.missing
    app, errors = app_factory(model=str(shipped_bundle))
    app.start_batch(str(tmp_path / "set"), str(tmp_path / "set" / "labels.csv"))
    pump(app.root, lambda: str(app.start_button.cget("state")) != "disabled")
    assert not errors and len(app.tree.get_children()) == 3
    # a folder holding none of them says where it looked
    (tmp_path / "empty").mkdir()
    app.start_batch(str(tmp_path / "empty"), str(tmp_path / "set" / "labels.csv"))
    assert "is in " + str(tmp_path / "empty") in errors[-1] and "images/" in errors[-1]


def test_listed_images_that_are_missing_are_counted_and_named(app_factory, shipped_bundle, tmp_path):
    images = _labelled_set(tmp_path, layout="beside")
    (tmp_path / images[1].name).unlink()
    app, errors = app_factory(model=str(shipped_bundle))
    app.start_batch(str(tmp_path), str(tmp_path / "labels.csv"))
    pump(app.root, lambda: str(app.start_button.cget("state")) != "disabled")
    assert not errors and len(app.tree.get_children()) == 2
    status, panel = app.status.cget("text"), app.metrics_box.get("1.0", "end")
    assert "1 image(s) listed in labels.csv not found" in status and images[1].stem in status
    assert "1 image(s) listed in labels.csv not found" in panel and images[1].stem in panel
    assert app.batch_result.missing == [images[1].stem]


def test_a_labels_csv_that_is_not_utf8_is_read_with_a_note_naming_it(app_factory, tmp_path):
    """A cp1252 file (as Excel on Windows saves a CSV) is read, and the window names it as one to check; a file
    that is no text at all is a message naming it (it raised UnicodeDecodeError on the Tk thread once)."""
    from dermalens.gui.batch import _labelled_items
    _labelled_set(tmp_path, layout="beside")
    latin = tmp_path / "latin1.csv"
    rows = (tmp_path / "labels.csv").read_text().splitlines()
    latin.write_bytes("\n".join([rows[0] + ",note,sex"] + [r + ",caf\u00e9,female" for r in rows[1:]]).encode("latin-1"))
    items = _labelled_items(tmp_path, latin)
    assert len(items) == len(rows) - 1 and any(str(latin) in n and "cp1252" in n for n in items.notes)
    assert all(meta.get("sex") == "female" for *_, meta in items)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"image_id,dx\n\x00\x81\xff\xfe,mel\n")
    app, errors = app_factory(backend=_NoPredictions())
    app.start_batch(str(tmp_path), str(binary))
    assert errors and str(binary) in errors[-1] and "UTF-8" in errors[-1]
    assert str(binary) in app.status.cget("text") and str(app.start_button.cget("state")) != "disabled"


def test_patient_columns_are_taken_from_the_rows_already_read(tmp_path, monkeypatch):
    """The labels CSV is read once for its labels and its patient columns alike, as `evaluate --labels` reads it
    (the batch view read the file a second time for its patient columns once); a detail it cannot read is still
    refused, naming the file and line."""
    from pathlib import Path

    from dermalens.gui.backend import BackendError
    from dermalens.gui.batch import _labelled_items
    _labelled_set(tmp_path, layout="beside")
    labels = tmp_path / "labels.csv"
    rows = labels.read_text().splitlines()
    details = [("55,5", "female", "back"), ("", "Male", "lower_extremity"), ("70", "unknown", "")]
    labels.write_text("\n".join(["Image_ID;DX;Age;Sex;Localization"] + [";".join([*r.split(","), *d])
                                                                        for r, d in zip(rows[1:], details)]) + "\n")
    reads, read_bytes = [], Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or read_bytes(self))
    items = _labelled_items(tmp_path, labels)
    assert reads.count(labels) == 1, reads
    assert [meta for *_, meta in items] == [{"age": 55.5, "sex": "female", "site": "back"},
                                            {"age": None, "sex": "male", "site": "lower extremity"},
                                            {"age": 70.0, "sex": None, "site": None}]
    labels.write_text(labels.read_text().replace(";70;", ";seventy;"))
    with pytest.raises(BackendError, match=r"labels.csv line 4: age must be a number"):
        _labelled_items(tmp_path, labels)


def test_one_image_listed_twice(app_factory, shipped_bundle, tmp_path):
    """Rows ISIC_x and ISIC_x.jpg name one image: with two labels it is an error naming both rows; with one
    label it is classified and counted once, and the window says so."""
    images = _labelled_set(tmp_path, n=2, layout="beside")
    base = (tmp_path / "labels.csv").read_text()
    dx = base.splitlines()[1].split(",")[1]  # images[0]'s label
    (tmp_path / "conflict.csv").write_text(base + f"{images[0].name},{'nv' if dx == 'mel' else 'mel'}\n")
    app, errors = app_factory(model=str(shipped_bundle))
    app.start_batch(str(tmp_path), str(tmp_path / "conflict.csv"))
    assert errors and "line 2" in errors[-1] and "line 4" in errors[-1] and images[0].name in errors[-1]
    assert "different labels" in errors[-1]
    (tmp_path / "twice.csv").write_text(base + f"{images[0].name},{dx}\n")
    _classified_once(app, errors, tmp_path, tmp_path / "twice.csv")


def _classified_once(app, errors, folder, labels_csv):
    """A batch whose labels list one of its two images twice: both classified, that one counted once, said so."""
    n = len(errors)
    app.start_batch(str(folder), str(labels_csv))
    pump(app.root, lambda: str(app.start_button.cget("state")) != "disabled")
    assert len(errors) == n and len(app.tree.get_children()) == 2
    assert app.batch_result.metrics["n"] == 2
    assert "counted once" in app.metrics_box.get("1.0", "end") and "note(s) in the panel" in app.status.cget("text")


def test_a_folder_batch_says_which_files_it_left_out_by_type(tmp_path):
    """A camera's raw .dng in the folder: `dermalens predict` names it, the batch view dropped it without a word."""
    from dermalens.gui.batch import batch_items
    from conftest import FIXTURES
    (tmp_path / "lesion.jpg").write_bytes((FIXTURES / "fullres" / "ISIC_0024311.jpg").read_bytes())
    (tmp_path / "IMG_0001.heic").write_bytes((FIXTURES / "heic" / "ISIC_0024311.heic").read_bytes())
    (tmp_path / "RAW_0001.dng").write_bytes(b"II*\0")
    items = batch_items(tmp_path, None)
    assert [p.name for p, *_ in items] == ["IMG_0001.heic", "lesion.jpg"]
    assert len(items.notes) == 1 and ".dng: 1" in items.notes[0], items.notes

def test_a_batch_names_a_skipped_file_once_and_keeps_a_broken_link(tmp_path, tiny_bundle):
    """'skipped /x/empty.jpg: /x/empty.jpg: the file is empty' named the path twice; a broken link was not listed."""
    from dermalens.gui.backend import LocalBackend
    from dermalens.gui.batch import batch_items, run_batch
    from conftest import FIXTURES
    (tmp_path / "lesion.jpg").write_bytes((FIXTURES / "fullres" / "ISIC_0024311.jpg").read_bytes())
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "moved.jpg").symlink_to(tmp_path / "gone.jpg")
    res = run_batch(LocalBackend(tiny_bundle), batch_items(tmp_path, None))
    assert len(res.rows) == 1 and sorted(e["file"] for e in res.errors) == [str(tmp_path / "empty.jpg"),
                                                                            str(tmp_path / "moved.jpg")]
    for e in res.errors:
        assert e["file"] not in e["error"] and e["error"], e


def test_one_image_id_on_two_rows(app_factory, shipped_bundle, tmp_path):
    """The same image_id on two rows (docs/cli.md: counted once when the labels agree, refused naming both
    lines when they differ), as the data reader reads it."""
    from dermalens.gui.batch import batch_items
    images = _labelled_set(tmp_path, n=2, layout="beside")
    base = (tmp_path / "labels.csv").read_text()
    dx = base.splitlines()[1].split(",")[1]  # images[0]'s label
    other = "nv" if dx == "mel" else "mel"
    (tmp_path / "conflict.csv").write_text(base + f"{images[0].stem},{other}\n")
    app, errors = app_factory(model=str(shipped_bundle))
    app.start_batch(str(tmp_path), str(tmp_path / "conflict.csv"))
    assert errors and str(tmp_path / "conflict.csv") in errors[-1] and "different labels" in errors[-1]
    assert f"line 2 ({images[0].stem}, {dx}) and line 4 ({images[0].stem}, {other})" in errors[-1], errors[-1]
    # the same label (in capitals), then a row with a label the reader refuses: its line is still the file's
    (tmp_path / "bad_after.csv").write_text(base + f"{images[0].stem},{dx.upper()}\nISIC_9999999,foo\n")
    app.start_batch(str(tmp_path), str(tmp_path / "bad_after.csv"))
    assert "line 5: 'foo'" in errors[-1] and str(tmp_path / "bad_after.csv") in errors[-1], errors[-1]
    (tmp_path / "twice.csv").write_text(base + f"{images[0].stem},{dx.upper()}\n")
    items = batch_items(tmp_path, tmp_path / "twice.csv")
    assert [p.name for p, *_ in items] == [p.name for p in images] and not items.missing
    assert items.notes == [f"line 2 ({images[0].stem}, {dx}) and line 4 ({images[0].stem}, {dx.upper()}) "
                           "list the same image: it is classified and counted once"]
    _classified_once(app, errors, tmp_path, tmp_path / "twice.csv")


def test_a_folder_with_images_only_in_subfolders_says_they_are_not_searched(app_factory, tmp_path):
    (tmp_path / "part1").mkdir()
    shutil.copy(sorted((MINI / "images").iterdir())[0], tmp_path / "part1")
    app, errors = app_factory(backend=_NoPredictions())
    app.start_batch(str(tmp_path))
    assert "no images" in errors[-1] and "sub-folders are not searched" in errors[-1] and "part1/" in errors[-1]


@pytest.mark.parametrize("url, says", [("", "it was empty"), ("http://[::1", "is not a URL"),
                                       ("localhost:8000", "try http://localhost:8000")])
def test_api_url_mistakes_are_messages(app_factory, url, says):
    app, errors = app_factory(api=url)
    assert errors and "--api needs a URL such as http://127.0.0.1:8000" in errors[-1] and says in errors[-1]
    assert app.backend is None and app.source_label.cget("text") == "no model"


def test_a_request_that_cannot_be_built_is_a_backend_error():
    from dermalens.gui.backend import BackendError, RemoteBackend
    backend = object.__new__(RemoteBackend)  # past the URL check, as a URL could be changed later
    backend.url, backend.api_key, backend.timeout = "http://[::1", None, 1
    with pytest.raises(BackendError):
        backend._request("GET", "/health")


def test_a_damaged_bundle_is_a_message_in_the_window(app_factory, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "card.json").write_text('{"name": "broken",')
    app, errors = app_factory(model=str(bundle))
    assert errors and "cannot load the model" in errors[-1] and "card.json" in errors[-1]
    assert app.backend is None and app.source_label.cget("text") == "no model"
    # not every damage is a BundleError (onnxruntime, zipfile, numpy raise their own): still a message
    import dermalens.inference

    def damaged(path):
        raise RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from gate.onnx failed")
    monkeypatch.setattr(dermalens.inference, "Predictor", damaged)
    app2, errors2 = app_factory(model=str(bundle))
    assert "cannot load the model" in errors2[-1] and "gate.onnx" in errors2[-1] and app2.root.winfo_exists()
    app2.start_batch(str(MINI / "images"))
    assert "no model loaded" in app2.status.cget("text")


def test_remote_mode_sends_the_api_key_from_the_environment(app_factory, shipped_bundle, monkeypatch):
    from dermalens.gui.backend import BackendError, RemoteBackend
    image = sorted((FIXTURES / "fullres").glob("*.jpg"))[0]
    with running_server(shipped_bundle, env_extra={"DERMALENS_API_KEY": "s3cret"}) as url:
        with pytest.raises(BackendError, match="DERMALENS_API_KEY"):
            RemoteBackend(url).predict(image)
        monkeypatch.setenv("DERMALENS_API_KEY", "s3cret\n")  # read from a secret file, as the server strips it
        app, errors = app_factory(api=url)
        assert not errors and app.backend.predict(image)["success"]


def test_a_key_the_server_would_refuse_is_said_in_the_window(app_factory, monkeypatch):
    """The window reads DERMALENS_API_KEY as the server does (serve.settings.api_key_from_env): a key that
    cannot travel in a header is named there, not sent and not a crash."""
    monkeypatch.setenv("DERMALENS_API_KEY", "schl\u00fcssel")
    app, errors = app_factory(api="http://127.0.0.1:9")
    assert errors and "printable ASCII" in errors[-1] and app.backend is None and app.root.winfo_exists()
