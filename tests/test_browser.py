"""The web UI in a real headless Chromium (Debian's), driven by Playwright."""
import re
import shutil

import httpx
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


# --- answers that arrive for an image the user has already replaced, refused files, bad patient details ---

def _hold_predict(page):
    """Route POST /predict into a list and answer nothing until the test calls `_release` on a held route."""
    held = []
    page.route("**/predict", lambda route: held.append(route))
    return held


def _wait_for(page, cond, what, timeout_ms=15000):
    for _ in range(timeout_ms // 25):
        if cond():
            return
        page.wait_for_timeout(25)  # lets Playwright dispatch the route and event callbacks
    raise AssertionError(f"timed out waiting for {what}")


def _release(route):
    """Answer a held /predict with the real server's answer (no error if the page has aborted it meanwhile)."""
    from playwright.sync_api import Error
    response = route.fetch()
    try:
        route.fulfill(response=response)
    except Error:
        pass


def _load(page, path):
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#predict:not([disabled])")
    assert page.inner_text("#status") == f"Ready: {path.name}. Press Predict."


def _blank_png(tmp_path):
    from PIL import Image
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 200), (250, 250, 250)).save(blank)  # the model answers "Not assessed" for it
    return blank


def test_a_late_answer_for_the_previous_image_is_not_shown_under_the_new_one(browser, ui_url, tmp_path,
                                                                            in_distribution_lesion):
    """Image A is sent, image B is chosen before A's answer comes: A's request is aborted and its answer, when it
    comes, is not shown under B's preview; B's own answer is."""
    blank = _blank_png(tmp_path)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, failed = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(ui_url)
    held = _hold_predict(page)
    _load(page, in_distribution_lesion)
    page.click("#predict")
    _wait_for(page, lambda: len(held) == 1, "the request for image A")
    _load(page, blank)  # image B, while A's answer is still on its way
    assert not page.is_visible("#result")
    _release(held[0])  # A's diagnosis arrives now
    page.wait_for_timeout(500)
    assert not page.is_visible("#result"), "image A's result is shown under image B"
    assert page.inner_text("#status") == "Ready: blank.png. Press Predict."
    assert page.is_enabled("#predict")
    assert any(u.endswith("/predict") for u in failed), "image A's request was not aborted"
    page.click("#predict")
    _wait_for(page, lambda: len(held) == 2, "the request for image B")
    _release(held[1])
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    assert page.is_visible("#ood") and "Not assessed" in page.inner_text("#ood")
    assert not page.is_visible("#summary") and not page.is_visible("#bars")
    assert not errors


def test_two_answers_in_reverse_order_leave_the_last_images_result(browser, ui_url, tmp_path, in_distribution_lesion):
    """A sent, B chosen and sent, B's answer first, then A's: the page keeps B's result."""
    blank = _blank_png(tmp_path)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui_url)
    held = _hold_predict(page)
    _load(page, in_distribution_lesion)
    page.click("#predict")
    _wait_for(page, lambda: len(held) == 1, "the request for image A")
    _load(page, blank)
    page.click("#predict")
    _wait_for(page, lambda: len(held) == 2, "the request for image B")
    _release(held[1])
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    assert page.is_visible("#ood")
    _release(held[0])
    page.wait_for_timeout(500)
    assert page.is_visible("#ood") and "Not assessed" in page.inner_text("#ood"), "image A's diagnosis replaced B's"
    assert not page.is_visible("#summary") and not page.is_visible("#bars"), "image A's diagnosis replaced B's"
    assert page.inner_text("#status") == "Done."


# The two tests above abort A's request before its answer comes, so the page's catch path drops it; these two
# let A's answer ARRIVE (fetch resolved) and only be read after B was taken: the check after `fetch` drops it.
_HOLD_ANSWER_BODIES = """
(() => {
  const realFetch = window.fetch.bind(window);
  // one entry per /predict answer that has arrived: `read` once the page asks for its body, `release()` lets
  // that read finish (the body is already here: aborting the request no longer affects it)
  window.__answers = [];
  window.fetch = async (url, options) => {
    if (!String(url).endsWith("/predict")) return realFetch(url, options);
    const { signal, ...rest } = options || {};
    const real = await realFetch(url, rest);
    const answer = new Response(await real.text(), { status: real.status, headers: real.headers });
    const entry = { read: false };
    const held = new Promise((resolve) => { entry.release = resolve; });
    const json = answer.json.bind(answer);
    answer.json = () => { entry.read = true; return held.then(json); };
    window.__answers.push(entry);
    return answer;
  };
})();
"""


def _page_holding_answer_bodies(browser, ui_url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script(_HOLD_ANSWER_BODIES)
    page.goto(ui_url)
    return page


def _wait_until_read(page, n):
    """Wait until the page has the n-th /predict answer (fetch resolved) and is reading its body."""
    page.wait_for_function(f"window.__answers.length >= {n} && window.__answers[{n - 1}].read", timeout=60000)


def _let_the_page_read(page, n):
    """Finish the n-th answer's body read; a timer after it runs only once the page has handled the body."""
    page.evaluate(f"async () => {{ window.__answers[{n - 1}].release(); await new Promise(r => setTimeout(r, 50)); }}")


def test_an_answer_that_arrived_for_the_previous_image_is_not_shown_under_the_new_one(browser, ui_url, tmp_path,
                                                                                     in_distribution_lesion):
    """A's answer has arrived, B is taken while the page reads it: A's result is not shown under B's preview."""
    blank = _blank_png(tmp_path)
    page = _page_holding_answer_bodies(browser, ui_url)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _load(page, in_distribution_lesion)
    page.click("#predict")
    _wait_until_read(page, 1)
    _load(page, blank)  # image B, while A's answer is being read
    _let_the_page_read(page, 1)
    assert not page.is_visible("#result"), "image A's result is shown under image B"
    assert page.inner_text("#status") == "Ready: blank.png. Press Predict."
    assert page.is_enabled("#predict")
    page.click("#predict")
    _wait_until_read(page, 2)
    _let_the_page_read(page, 2)
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    assert page.is_visible("#ood") and "Not assessed" in page.inner_text("#ood")
    assert not page.is_visible("#summary") and not page.is_visible("#bars")
    assert not errors


def test_an_answer_read_after_the_next_images_leaves_the_last_images_result(browser, ui_url, tmp_path,
                                                                           in_distribution_lesion):
    """A's answer has arrived, B is taken and sent, B's answer is read first, then A's: B's result stays."""
    blank = _blank_png(tmp_path)
    page = _page_holding_answer_bodies(browser, ui_url)
    _load(page, in_distribution_lesion)
    page.click("#predict")
    _wait_until_read(page, 1)
    _load(page, blank)
    page.click("#predict")
    _wait_until_read(page, 2)
    _let_the_page_read(page, 2)
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    assert page.is_visible("#ood")
    _let_the_page_read(page, 1)
    assert page.is_visible("#ood") and "Not assessed" in page.inner_text("#ood"), "image A's diagnosis replaced B's"
    assert not page.is_visible("#summary") and not page.is_visible("#bars"), "image A's diagnosis replaced B's"
    assert page.inner_text("#status") == "Done."


def test_a_refused_file_unloads_the_previous_image(browser, ui_url, tmp_path, in_distribution_lesion):
    """A file the page refuses (not an image, over 10 MB) must not leave the previous image ready to predict:
    the user would get the old image's result thinking it is the new one's."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui_url)
    _predict(page, in_distribution_lesion)
    assert page.is_visible("#result")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    big = tmp_path / "huge.png"
    limit = httpx.get(ui_url + "/model").json()["limits"]["max_image_bytes"]
    big.write_bytes(b"\0" * (limit + 1))
    for bad, reason in ((notes, "“notes.txt” is not an image"),
                        (big, f"“huge.png” is larger than this server takes ({(limit + 1) / 1e6:.1f} MB; at most "
                              f"{limit / 1e6:.1f} MB)")):
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#status.error")
        assert reason in page.inner_text("#status")
        assert page.is_disabled("#predict"), f"Predict still enabled for the previous image after {bad.name}"
        assert not page.is_visible("#preview") and not page.get_attribute("#preview", "src")
        assert not page.is_visible("#result")
        _load(page, in_distribution_lesion)  # the same file again is taken again
    page.click("#predict")
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    assert page.is_visible("#summary")


def test_a_bad_age_is_named_next_to_the_field_and_nothing_is_sent(browser, ui_url, artifacts, in_distribution_lesion):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    sent = []
    page.on("request", lambda r: sent.append(r) if r.url.endswith("/predict") else None)
    page.goto(ui_url)
    page.click("#patient summary")
    page.wait_for_function("document.querySelectorAll('#site option').length > 10")
    page.select_option("#sex", "female")
    _load(page, in_distribution_lesion)
    for typed in ("1e", "150", "-3"):  # "1e": a number field holding text reads as "" in JS
        page.click("#age", click_count=3)
        page.keyboard.press("Backspace")
        page.keyboard.type(typed)
        page.click("#predict")
        page.wait_for_function("document.getElementById('status').className === 'error' || "
                               "document.getElementById('status').textContent === 'Done.'")
        assert page.is_visible("#age-error"), f"no message by the age field for {typed!r}"
        assert "Age must be a number of years from 0 to 120" in page.inner_text("#age-error")
        assert "Nothing was sent" in page.inner_text("#status")
        assert page.get_attribute("#age", "aria-invalid") == "true"
        page.wait_for_timeout(200)
        assert not sent, f"age {typed!r} was sent (or dropped without a word)"
        assert page.input_value("#sex") == "female" and page.is_enabled("#predict")  # nothing else was lost
    page.screenshot(path=str(artifacts / "web_ui_bad_age.png"), full_page=True)
    page.click("#age", click_count=3)
    page.keyboard.type("65")
    assert not page.is_visible("#age-error")  # the message goes once the age is fixed
    page.click("#predict")
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    assert len(sent) == 1 and sent[0].post_data_json["metadata"] == {"age": 65, "sex": "female"}
    assert "patient details used" in page.inner_text("#model-info")
    page.click("#age", click_count=3)  # a bad age after an answer: that answer is not this form's, so it goes
    page.keyboard.type("150")
    page.click("#predict")
    page.wait_for_function("document.getElementById('status').className === 'error'")
    assert "Nothing was sent" in page.inner_text("#status") and not page.is_visible("#result") and len(sent) == 1


def test_only_a_network_failure_says_the_server_could_not_be_reached(browser, ui_url, in_distribution_lesion):
    """An answer the page cannot display is reported as such (and logged), not as an unreachable server."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    logged = []
    page.on("console", lambda m: logged.append(m.text) if m.type == "error" else None)
    page.goto(ui_url)
    calls = []

    def answer(route):
        calls.append(route)
        if len(calls) == 1:
            route.abort("connectionrefused")
        elif len(calls) == 2:  # a well-formed reply except that its probabilities are missing
            body = route.fetch().json()
            body["predictions"] = None
            route.fulfill(json=body)
        else:
            route.continue_()

    page.route("**/predict", answer)
    _predict(page, in_distribution_lesion)
    assert page.inner_text("#status").startswith("Could not reach the dermalens server.")
    page.click("#predict")
    page.wait_for_selector("#status.error:not(:empty)")
    page.wait_for_function("!document.getElementById('status').textContent.startsWith('Classifying')")
    status = page.inner_text("#status")
    assert status.startswith("Could not show the answer: "), status
    assert not page.is_visible("#result"), "a half-filled result is shown"
    assert any("could not show the answer" in t for t in logged), logged
    page.click("#predict")
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    assert page.is_visible("#summary") and len(page.query_selector_all("#bars li")) == 7


# --- what users drop and choose, server errors without a dermalens message, keyboard-only use ---

_DROP = """
async ([selector, files, uri]) => {
  const dt = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
    dt.items.add(new File([bytes], f.name, { type: f.type }));
  }
  if (uri) dt.setData("text/uri-list", uri);
  const target = document.querySelector(selector);
  const over = new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true });
  target.dispatchEvent(over);
  const drop = new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true });
  target.dispatchEvent(drop);
  return [over.defaultPrevented, drop.defaultPrevented];
}
"""


def _drop(page, selector, paths=(), uri=None):
    """Drop files (or only a link) on an element as a user's drag from the file manager would; returns whether
    the page prevented the browser's own handling of dragover and drop (which opens the file in the tab)."""
    import base64
    import mimetypes
    files = [{"name": p.name, "type": mimetypes.guess_type(p.name)[0] or "",
              "b64": base64.b64encode(p.read_bytes()).decode()} for p in paths]
    return page.evaluate(_DROP, [selector, files, uri])


def test_a_file_dropped_beside_the_drop_zone_is_taken_not_opened_by_the_browser(browser, ui_url,
                                                                               in_distribution_lesion):
    """A file dropped a little outside the dashed zone: the browser would open it in place of the page (and the
    page, with any result, would be gone); the page takes it instead."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui_url)
    for where in ("header", "#disclaimer", "#drop"):
        assert _drop(page, where, [in_distribution_lesion]) == [True, True], f"a file dropped on {where} is opened"
        page.wait_for_selector("#predict:not([disabled])")
        assert page.inner_text("#status") == f"Ready: {in_distribution_lesion.name}. Press Predict."
    page.click("#predict")
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    assert page.is_visible("#summary")


def test_several_files_a_link_and_an_empty_file_are_answered_in_words(browser, ui_url, tmp_path,
                                                                     in_distribution_lesion):
    blank = _blank_png(tmp_path)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui_url)
    _drop(page, "#drop", [in_distribution_lesion, blank])
    page.wait_for_selector("#predict:not([disabled])")
    assert page.inner_text("#status") == (f"Only one image is read at a time: of the 2 items dropped, "
                                          f"“{in_distribution_lesion.name}” was taken. "
                                          f"Ready: {in_distribution_lesion.name}. Press Predict.")
    page.click("#predict")
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    assert page.is_visible("#summary")  # the lesion's diagnosis, not the blank image's "Not assessed"
    _drop(page, "#drop", uri="https://example.org/lesion.jpg")  # an image dragged from another web page
    page.wait_for_selector("#status.error")
    assert "Nothing to read in what was dropped: drop an image file" in page.inner_text("#status")
    assert page.is_disabled("#predict") and not page.is_visible("#result")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    _load(page, in_distribution_lesion)
    page.set_input_files("#file", str(empty))
    page.wait_for_selector("#status.error")
    assert page.inner_text("#status") == "“empty.jpg” is empty (0 bytes). Choose another file."
    assert page.is_disabled("#predict") and not page.is_visible("#preview")


def test_a_file_the_browser_cannot_show_gets_no_broken_preview(browser, ui_url, tmp_path):
    """An iPhone's HEIC photo (Chromium cannot show HEIC): no broken-image icon, a word that there is no preview,
    and the server's answer once sent; a damaged one gets the server's reason."""
    from conftest import FIXTURES
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui_url)
    page.set_input_files("#file", str(FIXTURES / "heic" / "ISIC_0024311.heic"))
    page.wait_for_function("document.getElementById('status').textContent.includes('preview')")
    assert page.inner_text("#status") == ("Ready: ISIC_0024311.heic. This browser cannot show a preview of it; the "
                                          "server may still read it. Press Predict.")
    assert not page.is_visible("#preview") and page.is_enabled("#predict")
    page.click("#predict")
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    assert page.is_visible("#result")
    damaged = tmp_path / "IMG_0001.heic"
    damaged.write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 2000)
    page.set_input_files("#file", str(damaged))
    page.wait_for_function("document.getElementById('status').textContent.includes('preview')")
    page.click("#predict")
    page.wait_for_selector("#status.error")
    assert "cannot read this HEIC/HEIF image" in page.inner_text("#status")
    assert page.is_enabled("#predict") and not page.is_visible("#result")


def test_the_preview_shows_the_image_as_the_model_reads_it(browser, ui_url, tmp_path, in_distribution_lesion):
    """Transparent pixels over the colour the model reads them as (the card's transparent_background, black),
    not over the white page; a portrait photo stored landscape with an EXIF rotation upright, as the server
    turns it (its heat-map too)."""
    import httpx
    import numpy as np
    from PIL import Image
    bg = httpx.get(ui_url + "/model").json()["preprocessing"]["transparent_background"]
    rgba = np.array(Image.open(in_distribution_lesion).convert("RGBA"))
    rgba[:20, :, 3] = 0
    cutout = tmp_path / "cutout.png"
    Image.fromarray(rgba).save(cutout)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui_url)
    page.wait_for_function("document.querySelectorAll('#site option').length > 10")  # the card has been read
    _load(page, cutout)
    assert page.evaluate("getComputedStyle(document.getElementById('preview')).backgroundColor") == \
        "rgb({}, {}, {})".format(*bg)
    img = Image.open(in_distribution_lesion)
    assert img.width > img.height
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown turned 90° clockwise
    rotated = tmp_path / "portrait.jpg"
    img.save(rotated, exif=exif.tobytes(), quality=95)
    _load(page, rotated)
    page.wait_for_function("document.getElementById('preview').complete")
    w, h = page.evaluate("[document.getElementById('preview').naturalWidth, "
                         "document.getElementById('preview').naturalHeight]")
    assert (w, h) == (img.height, img.width), "the preview is not upright"
    page.click("#predict")
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    if page.is_visible("#summary"):
        page.check("#heat")
        page.wait_for_function("document.getElementById('overlay').complete")
        ow, oh = page.evaluate("[document.getElementById('overlay').naturalWidth, "
                               "document.getElementById('overlay').naturalHeight]")
        assert oh > ow, "the heat-map is not the way up the preview is"


def _answer_with(status, content_type, body):
    return lambda route: route.fulfill(status=status, content_type=content_type, body=body)


def _body_limit_answer(max_bytes=15_000_000) -> str:
    """The server's own 413 body for a request over DERMALENS_MAX_BODY_BYTES (its message says what to send)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from dermalens.serve.app import BodyLimit
    sent = []

    async def send(message):
        sent.append(message)
    with ThreadPoolExecutor(1) as thread:  # Playwright's own event loop runs in this one
        thread.submit(asyncio.run, BodyLimit(None, max_bytes)._reject({"type": "http"}, None, send)).result()
    return b"".join(m.get("body", b"") for m in sent).decode()


def test_server_errors_are_said_in_words_and_leave_no_earlier_result(browser, ui_url, in_distribution_lesion):
    """Errors from a proxy in front of the server (HTML bodies) or the server itself: a sentence, not 'server
    error 504'; the result of the earlier request (made perhaps with other details) is not left under it."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui_url)
    _predict(page, in_distribution_lesion)
    assert page.is_visible("#summary")
    html = "text/html"
    cases = [
        (413, html, "<html><title>413 Request Entity Too Large</title><body>nginx</body></html>", "too large"),
        (502, html, "<html><body><h1>502 Bad Gateway</h1></body></html>", "not available"),
        (503, html, "<html><body>Service Unavailable</body></html>", "busy or not ready"),
        (504, html, "<html><body><h1>504 Gateway Time-out</h1></body></html>", "took too long"),
        (500, "text/plain", "Internal Server Error", "failed"),
        (413, "application/json", '{"success": false, "error": {"code": "payload_too_large", '
                                  '"message": "request body larger than 15,000,000 bytes"}}', "too large for this"),
        (413, "application/json", _body_limit_answer(), "so send one of at most 11.2 MB, or a smaller copy of it)."),
        (504, "application/json", '{"success": false, "error": {"code": "timeout", '
                                  '"message": "prediction took longer than 30 s"}}', "took longer than 30 s. Try"),
    ]
    for status, ctype, body, words in cases:
        page.unroute("**/predict")
        page.route("**/predict", _answer_with(status, ctype, body))
        page.click("#predict")
        page.wait_for_function("!document.getElementById('status').textContent.startsWith('Classifying')")
        text = page.inner_text("#status")
        assert text.startswith("Could not classify: ") and words in text, (status, text)
        assert "server error" not in text and "<" not in text, text
        assert text.count("smaller copy") <= 1, f"the advice is given twice: {text}"
        assert not page.is_visible("#result"), f"the earlier result is still shown under the {status} error"
        assert page.is_enabled("#predict")
    page.unroute("**/predict")
    page.click("#predict")
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    assert page.is_visible("#summary")


def _held_past_the_page_limit(browser, ui_url, path, card):
    """A page on a fake clock whose /model answers `card` (None: no answer) and whose /predict is held open, as a
    proxy may hold it; returns the page once its request is held, with the card (if any) read."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.clock.install()  # the page's timers run only when the test moves the clock: no real wait
    page.route("**/model", (lambda route: route.fulfill(json=card)) if card else (lambda route: route.abort()))
    page.goto(ui_url)
    if card:
        page.wait_for_function("document.querySelectorAll('#site option').length > 10")  # the card has been read
    held = _hold_predict(page)
    _load(page, path)
    page.click("#predict")
    _wait_for(page, lambda: len(held) == 1, "the /predict request")
    return page


@pytest.mark.parametrize("server_limit_s, page_limit_s", [(5, 5 + 15), (None, 120)])
def test_a_request_held_open_is_given_up_a_little_after_the_servers_own_limit(browser, ui_url, in_distribution_lesion,
                                                                              server_limit_s, page_limit_s):
    """A proxy that holds /predict open left "Classifying…" up for ever: the page gives up a little after the
    server's limits.timeout_s (120 s when /model is not read), says so in words and Predict works again."""
    card = None
    if server_limit_s:
        card = httpx.get(ui_url + "/model").json()
        card["limits"]["timeout_s"] = server_limit_s
    page = _held_past_the_page_limit(browser, ui_url, in_distribution_lesion, card)
    # the server's own 504, when it has one, may still be on its way; the installed clock also moves with real time,
    # which on a loaded machine ran a second past the page's margin before the test moved it (a failed CI run)
    page.clock.run_for(page_limit_s * 1000 - 1500)
    assert page.inner_text("#status") == "Classifying…" and page.is_disabled("#predict")
    sending_ms = in_distribution_lesion.stat().st_size * 4 / 3 / 50 + 1000  # time allowed for sending the image
    page.clock.run_for(int(sending_ms) + 1500)
    _wait_for(page, lambda: page.is_enabled("#predict"), "the page to give up")
    text = page.inner_text("#status")
    said = re.match(r"Could not classify: no answer came within (\d+) s, so the page stopped waiting", text)
    assert said and page_limit_s <= int(said[1]) <= page_limit_s + sending_ms / 1000, text
    assert "Press Predict again" in text and "Could not reach" not in text, text
    assert page.get_attribute("#status", "class") == "error" and not page.is_visible("#result")


def test_an_answer_in_time_leaves_no_limit_behind(browser, ui_url, in_distribution_lesion):
    """The limit of a request that was answered does not fire later over its result."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.clock.install()
    page.goto(ui_url)
    _predict(page, in_distribution_lesion)
    assert page.inner_text("#status") == "Done."
    page.clock.run_for(600_000)
    assert page.inner_text("#status") == "Done." and page.is_visible("#summary")


def test_keyboard_only_on_a_phone_choose_predict_and_read_the_result(browser, ui_url, artifacts,
                                                                    in_distribution_lesion):
    """Tab to the drop zone, Enter, choose; Tab to Predict, Enter: the focus lands on the result (it would be
    lost to the page, as Predict is disabled while it runs), which scrolls into view below the form; Tab reaches
    the heat-map switch. A failure gives the focus back to Predict."""
    page = browser.new_page(viewport={"width": 375, "height": 667})
    choosers = []
    page.on("filechooser", lambda chooser: choosers.append(chooser))  # before the key press: a chooser opened sooner is not caught
    page.goto(ui_url)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "drop"
    page.keyboard.press("Enter")
    _wait_for(page, lambda: choosers, "the file chooser")
    choosers[0].set_files(str(in_distribution_lesion))
    page.wait_for_selector("#predict:not([disabled])")
    for _ in range(8):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "predict":
            break
    else:
        pytest.fail("Predict is not reached with Tab")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    page.wait_for_timeout(100)
    assert page.evaluate("document.activeElement.id") == "result-h", "the focus is lost after Predict"
    top = page.evaluate("document.getElementById('result-h').getBoundingClientRect().top")
    assert 0 <= top < 667, "the result is not scrolled into view"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "heat"
    page.keyboard.press("Space")
    assert page.is_visible("#overlay")
    page.screenshot(path=str(artifacts / "web_keyboard_phone.png"))
    page.route("**/predict", lambda route: route.abort("connectionrefused"))
    page.focus("#predict")
    page.keyboard.press("Enter")
    page.wait_for_selector("#status.error")
    assert page.inner_text("#status").startswith("Could not reach the dermalens server.")
    assert page.evaluate("document.activeElement.id") == "predict", "the focus is lost after a failure"


def test_the_drop_zone_stays_lit_while_a_file_is_dragged_over_its_text(browser, ui_url):
    """Moving a dragged file from the zone onto its text fires dragenter on the text, then dragleave on the zone
    (the order Chromium and Firefox use): the zone must stay lit, or it blinks off over most of its area."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui_url)
    lit = page.evaluate("""() => {
      const zone = document.getElementById('drop'), text = document.getElementById('drop-help');
      const fire = (el, type) => el.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true,
                                                                         dataTransfer: new DataTransfer() }));
      const over = () => zone.classList.contains('over');
      const seen = [];
      fire(zone, 'dragenter'); seen.push(over());
      fire(text, 'dragenter'); fire(zone, 'dragleave'); seen.push(over());  // onto the text
      fire(zone, 'dragenter'); fire(text, 'dragleave'); seen.push(over());  // back onto the zone's margin
      fire(zone, 'dragleave'); seen.push(over());  // out of the zone
      return seen;
    }""")
    assert lit == [True, True, True, False]
