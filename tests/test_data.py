import csv
from collections import Counter

import pytest

from dermalens.classes import CLASSES, CODES, MALIGNANT_CODES, index_of
from dermalens.data import DatasetError, load_dataset, load_ham10000, load_labelled_folder, select_split
from conftest import MINI, SPLIT_FILE


def test_classes_are_defined_once_in_index_order():
    assert CODES == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert MALIGNANT_CODES == {"mel", "bcc", "akiec"}
    assert CLASSES[4].name == "Melanoma"
    assert index_of(" MEL ") == 4
    with pytest.raises(ValueError, match="expected one of akiec"):
        index_of("melanoma")


def test_fixture_set_loads_with_all_classes():
    recs = load_ham10000(MINI)
    assert len(recs) == 49
    assert Counter(r.dx for r in recs) == {c: 7 for c in CODES}
    assert all(r.path.is_file() and r.lesion_id.startswith("HAM_") for r in recs)
    assert {len(select_split(recs, s, SPLIT_FILE)) for s in ("train", "val", "test")} == {21, 14}


def test_missing_metadata_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="data folder not found"):
        load_ham10000(tmp_path / "nowhere")
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="HAM10000_metadata.csv: metadata file not found"):
        load_ham10000(tmp_path)


def _rewrite(path, fn):
    rows = list(csv.DictReader(open(path)))
    fields = list(rows[0])
    rows = fn(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def test_unknown_label_names_the_line(mini_copy):
    meta = mini_copy / "HAM10000_metadata.csv"
    _rewrite(meta, lambda rows: [dict(rows[0], dx="melanomaa")] + rows[1:])
    with pytest.raises(DatasetError, match=r"unknown diagnosis label.*line 2: 'melanomaa'"):
        load_ham10000(mini_copy)


def test_image_listed_but_absent(mini_copy):
    first = next(iter((mini_copy / "images").iterdir()))
    first.unlink()
    with pytest.raises(DatasetError, match=rf"1 image\(s\) listed but not found \({first.stem}\)"):
        load_ham10000(mini_copy)
    assert len(load_ham10000(mini_copy, missing="skip")) == 48


def test_missing_column(mini_copy):
    _rewrite(mini_copy / "HAM10000_metadata.csv", lambda rows: [{**r, "dx": r["dx"]} for r in rows])
    text = (mini_copy / "HAM10000_metadata.csv").read_text().replace("lesion_id,", "lesion,", 1)
    (mini_copy / "HAM10000_metadata.csv").write_text(text)
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['lesion_id'\]"):
        load_ham10000(mini_copy)


def test_unreadable_image_is_reported_when_read(mini_copy):
    from dermalens.preprocess import ImageError, PreprocessSpec
    rec = load_ham10000(mini_copy)[0]
    rec.path.write_bytes(b"this is not a jpeg")
    with pytest.raises(ImageError, match="not a recognised image"):
        PreprocessSpec().to_uint8(rec.path)


def test_generic_labelled_folder(tmp_path):
    import shutil
    (tmp_path / "images").mkdir()
    picks = load_ham10000(MINI)[:5]
    for r in picks:
        shutil.copy(r.path, tmp_path / "images" / f"{r.image_id}.png")  # other extension is fine
    (tmp_path / "labels.csv").write_text("image_id,dx\n" + "".join(f"{r.image_id},{r.dx.upper()}\n" for r in picks))
    recs = load_dataset(tmp_path)
    assert [r.dx for r in recs] == [r.dx for r in picks]
    assert recs[0].path.suffix == ".png"
    (tmp_path / "labels.csv").write_text("image_id,dx\nfoo,nv\n")
    with pytest.raises(DatasetError, match="listed but not found"):
        load_labelled_folder(tmp_path / "labels.csv")
    with pytest.raises(DatasetError, match="expected HAM10000_metadata.csv"):
        load_dataset(tmp_path / "images")


def test_a_labels_csv_naming_one_image_twice(tmp_path):
    """One image on two rows (by id, or by id and file name): counted once with a note when the labels agree,
    refused naming both lines when they do not."""
    from dermalens.data import DatasetError, load_labelled_folder
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "ISIC_1.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "ISIC_2.jpg")
    (tmp_path / "same.csv").write_text("image_id,dx\nISIC_1,nv\nISIC_2,mel\nISIC_1.jpg,NV\n")
    recs = load_labelled_folder(tmp_path / "same.csv", tmp_path)
    assert [r.image_id for r in recs] == ["ISIC_1", "ISIC_2"]
    assert recs.notes == ["line 2 (ISIC_1, nv) and line 4 (ISIC_1.jpg, NV) list the same image: it is classified "
                          "and counted once"]
    (tmp_path / "differ.csv").write_text("image_id,dx\nISIC_1,nv\nISIC_1,mel\n")
    with pytest.raises(DatasetError, match=r"line 2 \(ISIC_1, nv\) and line 3 \(ISIC_1, mel\) list the same image "
                                           "with different labels"):
        load_labelled_folder(tmp_path / "differ.csv", tmp_path)


def test_labels_csv_lines_are_the_files_and_a_missing_image_counts_once(tmp_path):
    from dermalens.data import ImagesMissing
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "ISIC_1.jpg")
    (tmp_path / "blank.csv").write_text("image_id,dx\nISIC_1,nv\n\nISIC_1,mel\n")  # a blank line: line 4 in an editor
    with pytest.raises(DatasetError, match=r"line 2 \(ISIC_1, nv\) and line 4 \(ISIC_1, mel\)"):
        load_labelled_folder(tmp_path / "blank.csv", tmp_path)
    (tmp_path / "gone.csv").write_text("image_id,dx\nISIC_1,nv\nISIC_9,mel\nISIC_9,mel\n,nv\n")
    with pytest.raises(DatasetError, match="line 5: no image_id"):
        load_labelled_folder(tmp_path / "gone.csv", tmp_path, missing="skip")
    (tmp_path / "gone.csv").write_text("image_id,dx\nISIC_1,nv\nISIC_9,mel\nISIC_9,mel\n")
    assert load_labelled_folder(tmp_path / "gone.csv", tmp_path, missing="skip").absent == ["ISIC_9"]
    with pytest.raises(ImagesMissing, match=r"1 image\(s\) listed but not found \(ISIC_9\)"):
        load_labelled_folder(tmp_path / "gone.csv", tmp_path)
