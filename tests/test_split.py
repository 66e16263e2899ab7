"""The committed split: lesion-grouped, stratified, reproducible byte for byte."""
import csv
from collections import Counter, defaultdict

import pytest

from dermalens.cli import main
from dermalens.data import load_ham10000, make_split, read_split
from conftest import HAM, SPLIT_FILE


def _rows():
    return list(csv.DictReader(open(SPLIT_FILE)))


def check_no_lesion_crosses(rows):
    splits_of = defaultdict(set)
    for r in rows:
        splits_of[r["lesion_id"]].add(r["split"])
    crossing = [l for l, s in splits_of.items() if len(s) > 1]
    assert not crossing, f"lesions in several splits: {crossing[:5]}"


def check_proportions(rows, tolerance=0.02):
    whole = Counter(r["dx"] for r in rows)
    n = len(rows)
    for split in ("train", "val", "test"):
        part = [r for r in rows if r["split"] == split]
        counts = Counter(r["dx"] for r in part)
        for dx, c in whole.items():
            assert abs(counts[dx] / len(part) - c / n) <= tolerance, (split, dx)


def test_committed_split_is_lesion_grouped_and_stratified():
    rows = _rows()
    assert len(rows) == 10015
    assert Counter(r["split"] for r in rows) == {"train": 6993, "val": 1510, "test": 1512}
    check_no_lesion_crosses(rows)
    check_proportions(rows)


def test_the_checks_can_fail():
    rows = [dict(r) for r in _rows()]
    # move one image of a multi-image lesion to another split: the grouping check must see it
    lesion = Counter(r["lesion_id"] for r in rows).most_common(1)[0][0]
    victim = next(r for r in rows if r["lesion_id"] == lesion)
    victim["split"] = "test" if victim["split"] != "test" else "train"
    with pytest.raises(AssertionError, match="lesions in several splits"):
        check_no_lesion_crosses(rows)
    # an unstratified split (all melanomas in test) must fail the proportion check
    skewed = [dict(r, split="test") if r["dx"] == "mel" else r for r in _rows()]
    with pytest.raises(AssertionError):
        check_proportions(skewed)


@pytest.mark.skipif(not (HAM / "HAM10000_metadata.csv").is_file(), reason="needs ../shared/data/ham10000")
def test_split_command_reproduces_the_committed_file(tmp_path, capsys):
    out = tmp_path / "split.csv"
    assert main(["split", "--data", str(HAM), "--out", str(out)]) == 0
    assert out.read_bytes() == SPLIT_FILE.read_bytes()
    assert "sha256" in capsys.readouterr().out


@pytest.mark.skipif(not (HAM / "HAM10000_metadata.csv").is_file(), reason="needs ../shared/data/ham10000")
def test_another_seed_gives_another_valid_split():
    recs = load_ham10000(HAM)
    a = make_split(recs, seed=1)
    rows = [{"lesion_id": r.lesion_id, "dx": r.dx, "split": a[r.image_id]} for r in recs]
    check_no_lesion_crosses(rows)
    check_proportions(rows)
    assert a != read_split(SPLIT_FILE)


@pytest.mark.skipif(not (HAM / "HAM10000_metadata.csv").is_file(), reason="needs ../shared/data/ham10000")
def test_split_command_never_silently_replaces_a_different_split(tmp_path, capsys):
    out = tmp_path / "split.csv"
    out.write_bytes(SPLIT_FILE.read_bytes())
    assert main(["split", "--data", str(HAM), "--out", str(out), "--seed", "1"]) == 2
    assert "images change split" in capsys.readouterr().err
    assert out.read_bytes() == SPLIT_FILE.read_bytes(), "the split models were trained on must survive"
    assert main(["split", "--data", str(HAM), "--out", str(out)]) == 0  # the same split: nothing to protect
    assert main(["split", "--data", str(HAM), "--out", str(out), "--seed", "1", "--force"]) == 0
    assert read_split(out) != read_split(SPLIT_FILE)
    notes = tmp_path / "notes.csv"  # any other file is named as such, and kept
    for text in ("hello\n", "image_id,dx\nISIC_0024306,nv\n"):
        notes.write_text(text)
        assert main(["split", "--data", str(HAM), "--out", str(notes)]) == 2
        assert "is not a split file" in capsys.readouterr().err
        assert notes.read_text() == text


def test_split_out_that_is_no_split_file_is_refused_even_with_force(mini_copy, tmp_path, capsys):
    """--force replaces one split with another, never the data set's metadata, an image or a folder."""
    from conftest import FIXTURES
    meta = mini_copy / "HAM10000_metadata.csv"
    image = tmp_path / "lesion.jpg"
    image.write_bytes((FIXTURES / "fullres" / "ISIC_0024311.jpg").read_bytes())
    kept = {meta: meta.read_bytes(), image: image.read_bytes()}
    for out, words in ((meta, "is the data set's own metadata file"), (image, "is not a split file"),
                       (tmp_path, "is a folder; give a file name such as"), (image / "s.csv", "lies inside a file")):
        for force in ([], ["--force"]):
            assert main(["split", "--data", str(mini_copy), "--out", str(out), *force]) == 2, (out, force)
            assert words in capsys.readouterr().err, (out, force)
    assert {p: p.read_bytes() for p in kept} == kept


def test_a_broken_split_file_is_replaced_only_with_force(mini_copy, tmp_path, capsys):
    out = tmp_path / "split.csv"
    out.write_text("image_id,split\nISIC_1,train\nISIC_1,test\n")
    assert main(["split", "--data", str(mini_copy), "--out", str(out)]) == 2
    assert "broken split file" in capsys.readouterr().err and "ISIC_1,test" in out.read_text()
    assert main(["split", "--data", str(mini_copy), "--out", str(out), "--force"]) == 0
    assert set(read_split(out)) == {r.image_id for r in load_ham10000(mini_copy)}
