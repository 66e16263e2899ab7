"""The web UI in a real headless Chromium (Debian's), driven by Playwright."""
import shutil

import pytest

from conftest import MINI
from serverutil import running_server

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium"):
        pytest.fail("chromium is not installed (make test installs Debian's chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def ui_url(shipped_bundle):
    with running_server(shipped_bundle) as url:
        yield url


def _predict(page, path):
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#predict:not([disabled])")
    page.click("#predict")
    page.wait_for_function("document.getElementById('status').textContent.length > 0 && "
                           "!document.getElementById('status').textContent.startsWith('Classifying')")


def test_upload_and_read_the_bars(browser, ui_url, artifacts, in_distribution_lesion):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(ui_url)
    assert "Not a medical device" in page.inner_text("#disclaimer")
    _predict(page, in_distribution_lesion)
    assert page.inner_text("#status") == "Done."
    bars = page.query_selector_all("#bars li")
    assert len(bars) == 7
    probs = [float(b.get_attribute("data-prob")) for b in bars]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-3)
    assert page.text_content("#risk-level").startswith("Risk: ")
    assert page.inner_text("#risk-text")
    page.check("#heat")
    assert page.is_visible("#overlay")
    page.screenshot(path=str(artifacts / "web_ui.png"), full_page=True)
    assert not errors


def test_patient_details_are_sent_and_reported(browser, ui_url, shipped_bundle, artifacts, in_distribution_lesion):
    """The optional Patient details section: its site list comes from the model, the values reach the API and
    the page says they were used; the probabilities are `Predictor.predict(..., metadata=...)`'s."""
    from dermalens.inference import Predictor
    from dermalens.inference.metadata import PatientMetadata
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(ui_url)
    page.click("#patient summary")
    page.wait_for_function("document.querySelectorAll('#site option').length > 10")
    page.fill("#age", "65")
    page.select_option("#sex", "male")
    page.select_option("#site", "back")
    _predict(page, in_distribution_lesion)
    assert "patient details used" in page.inner_text("#model-info")
    expected = Predictor(shipped_bundle).predict(in_distribution_lesion, metadata=PatientMetadata(65.0, "male", "back"))
    top = page.query_selector_all("#bars li")[0]
    assert top.get_attribute("data-code") == expected.codes[int(expected.probabilities.argmax())]
    assert float(top.get_attribute("data-prob")) == pytest.approx(float(expected.probabilities.max()), abs=1e-5)
    page.screenshot(path=str(artifacts / "web_ui_patient_details.png"), full_page=True)
    page.select_option("#sex", "")
    page.fill("#age", "")
    page.select_option("#site", "")
    _predict(page, in_distribution_lesion)
    assert "image only" in page.inner_text("#model-info")


def test_out_of_distribution_gets_a_warning_not_a_diagnosis(browser, ui_url, tmp_path, artifacts):
    from PIL import Image
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 200), (250, 250, 250)).save(blank)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui_url)
    _predict(page, blank)
    assert page.is_visible("#ood") and "Not assessed" in page.inner_text("#ood")
    assert not page.is_visible("#summary") and not page.is_visible("#bars")
    page.screenshot(path=str(artifacts / "web_ui_ood.png"), full_page=True)


def test_a_phone_photo_is_refused_with_the_reason_in_words(browser, ui_url, artifacts):
    from conftest import FIXTURES
    phone = sorted((FIXTURES / "modality" / "pad_ufes_20").glob("*.jpg"))[0]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui_url)
    _predict(page, phone)
    text = page.inner_text("#ood")
    assert page.is_visible("#ood") and "Not assessed" in text
    assert "ordinary photo, not a dermoscopic image" in text and "only reads dermoscopic images" in text
    assert page.get_attribute("#ood li", "data-code") == "not_dermoscopic"
    assert not page.is_visible("#summary") and not page.is_visible("#bars") and not page.is_visible("#risk-level")
    assert not page.is_visible("#heat") and not page.is_visible("#overlay")  # no heat-map offered either
    page.screenshot(path=str(artifacts / "web_not_dermoscopic.png"), full_page=True)


def test_phone_width_keyboard_and_errors(browser, ui_url, tmp_path, artifacts):
    page = browser.new_page(viewport={"width": 375, "height": 800})
    page.goto(ui_url)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, "no horizontal scrolling on a phone"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "drop"  # the drop zone is reachable by keyboard
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image at all")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#predict:not([disabled])")
    page.click("#predict")
    page.wait_for_selector("#status.error")
    assert "Could not classify" in page.inner_text("#status")
    _predict(page, sorted((MINI / "images").iterdir())[1])
    page.screenshot(path=str(artifacts / "web_ui_phone.png"), full_page=True)


def test_a_rare_class_chosen_over_a_more_probable_one_is_explained(browser, ui_url, shipped_bundle, artifacts):
    import numpy as np
    from dermalens.inference import Predictor
    pred = Predictor(shipped_bundle)
    if np.ptp(pred.bundle.decision_bias) == 0:
        pytest.skip("the shipped model has no decision bias: the predicted class is always the most probable")
    for path in sorted((MINI / "images").iterdir()):
        r = pred.predict(path)
        if r.in_distribution and r.top != int(np.argmax(r.probabilities)):
            break
    else:
        pytest.fail("no fixture image where the decision rule overrides the most probable class")
    most = r.names[int(np.argmax(r.probabilities))]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(ui_url)
    _predict(page, path)
    assert page.inner_text("#top-name") == r.names[r.top]
    assert page.is_visible("#reweighted") and f"more probable {most}" in page.inner_text("#reweighted")
    assert page.is_visible("#uncertain") == (not r.confident)
    page.screenshot(path=str(artifacts / "web_ui_reweighted.png"), full_page=True)
    assert not errors


def test_a_server_with_an_api_key_asks_for_it_on_the_page(browser, tiny_bundle, in_distribution_lesion):
    """With DERMALENS_API_KEY set the page still classifies: it asks for the key once, then sends it."""
    with running_server(tiny_bundle, {"DERMALENS_API_KEY": "s3cret"}) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        assert not page.is_visible("#api-key")  # nothing to ask until the server says so
        _predict(page, in_distribution_lesion)
        assert page.is_visible("#api-key") and "needs an API key" in page.inner_text("#status")
        page.fill("#api-key", "wrong")
        page.click("#predict")
        page.wait_for_function("document.getElementById('status').textContent.includes('not accepted')")
        page.fill("#api-key", "s3cret")
        page.click("#predict")
        page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
        assert page.is_visible("#result")
        page.reload()  # kept for the tab
        assert page.input_value("#api-key") == "s3cret"
