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
    with pytest.raises(DatasetError, match="no HAM10000_metadata.csv in this folder.*--data"):
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


def _images(folder, *names):
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", (8, 8)).save(folder / n)


def test_a_labels_csv_saved_as_cp1252_is_read_with_a_warning_naming_it(tmp_path):
    """Before: "'utf-8' codec can't decode byte 0xe9 in position ...", naming no file."""
    _images(tmp_path, "ISIC_1.jpg", "ISIC_2.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_bytes("image_id,dx,localization,note\nISIC_1,nv,lèvre,Hélène\nISIC_2,mel,dos,\n".encode("cp1252"))
    recs = load_labelled_folder(labels, tmp_path)
    assert [(r.image_id, r.dx) for r in recs] == [("ISIC_1", "nv"), ("ISIC_2", "mel")]
    assert any(str(labels) in w and "not UTF-8" in w and "cp1252" in w for w in recs.warnings), recs.warnings
    assert recs.rows["ISIC_1"][1]["note"] == "Hélène"
    # UTF-8 with a BOM (Excel's "CSV UTF-8") needs no warning
    labels.write_bytes("image_id,dx,note\nISIC_1,nv,Hélène\nISIC_2,nv,\n".encode("utf-8-sig"))
    assert not load_labelled_folder(labels, tmp_path).warnings
    # neither UTF-8 nor cp1252 (0x81 is undefined there): an error naming the file and the line
    labels.write_bytes(b"image_id,dx\nISIC_1,nv\nISIC_2,m\x81l\n")
    with pytest.raises(DatasetError, match=rf"{labels} line 3: not a text CSV file"):
        load_labelled_folder(labels, tmp_path)


@pytest.mark.parametrize("sep", [";", "\t"])
def test_a_labels_csv_separated_by_semicolons_or_tabs_is_read(tmp_path, sep):
    """Before: "missing column(s) ['image_id', 'dx']; found ['image_id;dx']"."""
    _images(tmp_path, "ISIC_1.jpg", "ISIC_2.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"image_id{sep}dx{sep}age\nISIC_1{sep}nv{sep}45,5\nISIC_2{sep}mel{sep}60\n")
    recs = load_labelled_folder(labels, tmp_path)
    assert [(r.image_id, r.dx) for r in recs] == [("ISIC_1", "nv"), ("ISIC_2", "mel")]
    assert recs.delimiter == sep and recs.rows["ISIC_1"][1]["age"] == "45,5"


def test_a_labels_csv_with_other_columns_says_which_separator_it_seems_to_use(tmp_path):
    _images(tmp_path, "ISIC_1.jpg")
    (tmp_path / "labels.csv").write_text("image;diagnosis\nISIC_1;nv\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['image_id', 'dx'\]; found \['image', "
                                           r"'diagnosis'\] \(this file seems to be separated by ';'\)"):
        load_labelled_folder(tmp_path / "labels.csv", tmp_path)


def test_column_names_are_matched_whatever_their_case_and_spaces(tmp_path):
    """Before: 'Image_ID,DX' (as a spreadsheet writes headers) was "missing column(s) ['image_id', 'dx']"."""
    _images(tmp_path, "ISIC_1.jpg")
    (tmp_path / "labels.csv").write_text(" Image_ID , DX \nISIC_1,MEL\n")
    recs = load_labelled_folder(tmp_path / "labels.csv", tmp_path)
    assert [(r.image_id, r.dx) for r in recs] == [("ISIC_1", "mel")]
    (tmp_path / "twice.csv").write_text("image_id,dx,DX\nISIC_1,mel,nv\n")
    with pytest.raises(DatasetError, match=r"columns 'dx' and 'DX' are both read as dx"):
        load_labelled_folder(tmp_path / "twice.csv", tmp_path)


def test_diagnoses_may_be_written_as_the_class_names(tmp_path):
    """Before: 'melanoma' was "unknown diagnosis label(s) ... expected one of akiec, ..."."""
    names = {"melanoma": "mel", "Melanocytic nevi": "nv", "basal cell carcinoma": "bcc", "DERMATOFIBROMA": "df",
             "vascular lesion": "vasc", "Actinic keratosis": "akiec", "benign keratosis": "bkl",
             "Melanocytic nevus": "nv", "Benign keratosis-like lesions": "bkl", "basal_cell_carcinoma": "bcc"}
    ids = [f"ISIC_{i}" for i in range(len(names))]
    _images(tmp_path, *(f"{i}.jpg" for i in ids))
    (tmp_path / "labels.csv").write_text("image_id,dx\n" + "".join(f"{i},{n}\n" for i, n in zip(ids, names)))
    recs = load_labelled_folder(tmp_path / "labels.csv", tmp_path)
    assert [r.dx for r in recs] == list(names.values())
    assert any("'melanoma' as mel" in n for n in recs.notes), recs.notes
    (tmp_path / "bad.csv").write_text("image_id,dx\nISIC_0,melanomaa\nISIC_1,nevus blue\n")
    with pytest.raises(DatasetError) as e:
        load_labelled_folder(tmp_path / "bad.csv", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "bad.csv") in msg and "line 2: 'melanomaa' (mel?)" in msg and "line 3: 'nevus blue'" in msg
    assert "expected one of akiec, bcc, bkl, df, mel, nv, vasc" in msg


def test_a_listed_file_name_that_differs_from_the_one_on_disk_only_in_its_extension(tmp_path):
    """Before: ISIC_1.JPG or ISIC_2.png listed, ISIC_1.jpg and ISIC_2.jpg on disk: 'listed but not found', no hint."""
    _images(tmp_path, "ISIC_1.jpg", "ISIC_2.jpg", "ISIC_3.jpg", "ISIC_3.png")
    (tmp_path / "labels.csv").write_text("image_id,dx\nISIC_1.JPG,nv\nISIC_2.png,mel\nISIC_3.PNG,nv\n")
    recs = load_labelled_folder(tmp_path / "labels.csv", tmp_path)
    assert [r.path.name for r in recs] == ["ISIC_1.jpg", "ISIC_2.jpg", "ISIC_3.png"]
    said = [w for w in recs.warnings if "ISIC_1.JPG" in w]
    assert len(said) == 1 and "ISIC_1.jpg" in said[0] and "3 listed file names" in said[0], recs.warnings
    # ISIC_3.tif: two files of that stem, which one is meant cannot be guessed; the error names both
    (tmp_path / "labels.csv").write_text("image_id,dx\nISIC_1,nv\nISIC_3.tif,nv\n")
    with pytest.raises(DatasetError, match=r"1 image\(s\) listed but not found \(ISIC_3.tif\).*"
                                           r"ISIC_3.tif: there are ISIC_3.jpg and ISIC_3.png"):
        load_labelled_folder(tmp_path / "labels.csv", tmp_path)
    # a bare ISIC_3 (an iPhone's IMG_1.heic beside its IMG_1.jpg copy): the .jpg was read without a word
    (tmp_path / "labels.csv").write_text("image_id,dx\nISIC_1,nv\nISIC_3,mel\n")
    with pytest.raises(DatasetError, match=r"ISIC_3: there are ISIC_3.jpg and ISIC_3.png"):
        load_labelled_folder(tmp_path / "labels.csv", tmp_path)
    # where missing images are skipped (the desktop batch), the two are listed, not "not listed"
    recs = load_labelled_folder(tmp_path / "labels.csv", tmp_path, missing="skip")
    assert any("ISIC_3: there are ISIC_3.jpg and ISIC_3.png" in w for w in recs.warnings), recs.warnings
    assert [w for w in recs.warnings if "not listed" in w and "ISIC_3" in w] == [], recs.warnings


def test_images_in_the_folder_that_the_labels_do_not_list_are_counted_in_a_warning(tmp_path):
    """Before: left out without a word, so an incomplete CSV went unnoticed."""
    _images(tmp_path, *(f"ISIC_{i}.jpg" for i in range(9)))
    (tmp_path / "labels.csv").write_text("image_id,dx\nISIC_0,nv\nISIC_1,mel\n")
    recs = load_labelled_folder(tmp_path / "labels.csv", tmp_path)
    assert len(recs) == 2
    (w,) = [w for w in recs.warnings if "not listed" in w]
    assert f"7 image(s) in {tmp_path} are not listed in {tmp_path / 'labels.csv'}" in w
    assert "ISIC_2.jpg" in w and "ISIC_8.jpg" not in w and ", ..." in w
    (tmp_path / "labels.csv").write_text("image_id,dx\n" + "".join(f"ISIC_{i},nv\n" for i in range(9)))
    assert not load_labelled_folder(tmp_path / "labels.csv", tmp_path).warnings


def test_ham10000_reads_as_before():
    """The training data goes through the same reader: same records, nothing to warn about."""
    recs = load_ham10000(MINI)
    rows = list(csv.DictReader(open(MINI / "HAM10000_metadata.csv")))
    assert [(r.image_id, r.dx, r.lesion_id, r.path.name) for r in recs] == \
        [(r["image_id"], r["dx"], r["lesion_id"], f"{r['image_id']}.jpg") for r in rows]
    assert recs.warnings == [] and recs.notes == [] and recs.delimiter == ","
