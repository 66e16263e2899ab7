"""One helper writes a file whole or not at all, for `predict --csv/--json` and the evaluation report alike."""
import os

import pytest


def test_a_write_that_fails_midway_leaves_the_earlier_file_and_no_temporary_one(tmp_path):
    from dermalens.whole_file import replaced_whole
    out = tmp_path / "results.csv"
    out.write_text("earlier\n")
    with pytest.raises(KeyboardInterrupt):
        with replaced_whole(out) as f:
            f.write("half a ")
            raise KeyboardInterrupt
    assert out.read_text() == "earlier\n" and os.listdir(tmp_path) == ["results.csv"]


def test_the_report_is_written_through_a_link_with_the_replaced_files_permissions(tmp_path):
    """Before: the report's own writer replaced a linked metrics.json or report.html with a plain file, and with
    the temporary file's permissions; `predict --csv` already kept both."""
    from dermalens.evaluate.report import _write_text
    real = tmp_path / "kept" / "report.html"
    real.parent.mkdir()
    real.write_text("earlier")
    real.chmod(0o640)
    link = tmp_path / "report.html"
    link.symlink_to(real)
    _write_text(link, "séance \udce9")  # a name not UTF-8 on disk: U+FFFD, so the page stays UTF-8
    assert link.is_symlink() and real.read_bytes() == "séance \ufffd".encode("utf-8")
    assert (real.stat().st_mode & 0o777) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["kept", "report.html"] and os.listdir(real.parent) == ["report.html"]


def test_predict_and_the_report_share_the_writer():
    from dermalens import predict, whole_file
    from dermalens.evaluate import report
    assert predict.replaced_whole is whole_file.replaced_whole is report.replaced_whole
