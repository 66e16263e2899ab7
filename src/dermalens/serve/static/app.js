// dermalens web UI: no framework, no CDN; talks to POST /predict with a data URL.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const drop = $("drop"), fileInput = $("file"), preview = $("preview"), btn = $("predict");
  const statusEl = $("status");
  let dataUrl = null;
  // Every image taken bumps imageSeq; a /predict answer (or a file read) for an older one is dropped, never
  // shown under the new preview. The running request is aborted as soon as another image is taken.
  let imageSeq = 0;
  let inFlight = null;  // the AbortController of the running /predict request
  const savedKey = sessionStorage.getItem("dermalens-api-key");
  if (savedKey) { $("api-key").value = savedKey; $("key-row").hidden = false; }
  const COLOURS = { low: "#2e7d32", moderate: "#ef6c00", high: "#c62828", indeterminate: "#616161" };
  let maxBytes = 10 * 1024 * 1024;  // until /model says what this server takes (limits.max_image_bytes)
  const MAX_AGE = 120;
  // A request a proxy holds open gets a limit of the page's own, a little over the server's (whose 504 says more).
  let serverTimeoutS = null;  // until /model says (limits.timeout_s)
  const FALLBACK_LIMIT_S = 120;  // /model unread: over the server's default 30 s with room to spare
  const MARGIN_S = 15;  // decoding the JSON, reading the answer back, and a proxy's own hop
  const SEND_BYTES_PER_MS = 50;  // the server's timer starts once the image has arrived: sending it at 400 kbit/s fits
  function requestLimitMs(bodyChars) {
    return (serverTimeoutS ? serverTimeoutS + MARGIN_S : FALLBACK_LIMIT_S) * 1000 + bodyChars / SEND_BYTES_PER_MS;
  }

  function setStatus(msg, isError) {
    statusEl.textContent = msg;
    statusEl.className = isError ? "error" : "";
  }

  // Forget the loaded image, its result and any request for it: nothing about it may be shown or predicted
  // once the user has picked another file (even one that is then refused).
  function clearImage() {
    imageSeq += 1;
    if (inFlight) { inFlight.abort(); inFlight = null; }
    dataUrl = null;
    preview.hidden = true;
    preview.removeAttribute("src");
    btn.disabled = true;
    $("result").hidden = true;
    $("overlay").hidden = true;
    $("overlay").removeAttribute("src");
  }

  function takeFile(file, note) {
    if (!file) return;
    clearImage();
    const seq = imageSeq;
    note = note ? note + " " : "";
    if (file.type && !file.type.startsWith("image/")) {
      setStatus("“" + file.name + "” is not an image. Choose a JPEG, PNG, BMP, GIF, WEBP, TIFF, HEIC or AVIF file.", true);
      return;
    }
    if (file.size > maxBytes) {
      setStatus("“" + file.name + "” is larger than this server takes (" + (file.size / 1e6).toFixed(1) +
                " MB; at most " + (maxBytes / 1e6).toFixed(1) + " MB). Choose a smaller image or a smaller copy " +
                "of it.", true);
      return;
    }
    if (file.size === 0) {
      setStatus("“" + file.name + "” is empty (0 bytes). Choose another file.", true);
      return;
    }
    setStatus("Reading " + file.name + "…");
    const reader = new FileReader();
    reader.onload = () => {
      if (seq !== imageSeq) return;  // another file was taken while this one was read
      dataUrl = reader.result;
      // A file this browser cannot decode (TIFF and HEIC in most browsers, a damaged file) gets no
      // broken-image icon: the page says there is no preview and still sends it (the server reads TIFF and HEIC and
      // names what it cannot read).
      preview.onerror = () => {
        if (seq !== imageSeq) return;
        preview.hidden = true;
        setStatus(note + "Ready: " + file.name + ". This browser cannot show a preview of it; the server may " +
                  "still read it. Press Predict.");
      };
      preview.src = dataUrl;
      preview.hidden = false;
      btn.disabled = false;
      setStatus(note + "Ready: " + file.name + ". Press Predict.");
    };
    reader.onerror = () => {
      if (seq !== imageSeq) return;
      setStatus("Could not read “" + file.name + "”. Choose it again or another file.", true);
    };
    reader.readAsDataURL(file);
  }

  // the accepted body sites come from the model's card, so the list always matches the model
  fetch("/model").then((r) => (r.ok ? r.json() : null)).then((card) => {
    const limit = card && card.limits && Number(card.limits.max_image_bytes);
    if (limit > 0) maxBytes = limit;
    const timeout = card && card.limits && Number(card.limits.timeout_s);
    if (timeout > 0 && Number.isFinite(timeout)) serverTimeoutS = timeout;
    const bg = card && card.preprocessing && card.preprocessing.transparent_background;
    if (Array.isArray(bg) && bg.length === 3) {
      // the model reads a transparent pixel as this colour: the preview shows it so, not over the white page
      preview.style.backgroundColor = "rgb(" + bg.map(Number).join(", ") + ")";
    }
    if (!card || !card.metadata) { $("patient").hidden = true; return; }
    card.metadata.sites.forEach((s) => {
      const o = document.createElement("option"); o.value = s; o.textContent = s; $("site").appendChild(o);
    });
  }).catch(() => { $("patient").hidden = true; });

  // The age field's problem in words, or null. A number field holding text reads as "" (validity.badInput),
  // so that case is caught here rather than silently sent without an age.
  function ageProblem() {
    const el = $("age");
    const text = el.value.trim();
    if (el.validity && el.validity.badInput) return "Age must be a number of years from 0 to " + MAX_AGE + ".";
    if (text === "") return null;
    const n = Number(text);
    if (!Number.isFinite(n) || n < 0 || n > MAX_AGE) {
      return "Age must be a number of years from 0 to " + MAX_AGE + ", not " + text + ".";
    }
    return null;
  }

  function showAgeProblem(msg) {
    const err = $("age-error"), el = $("age");
    err.textContent = msg || "";
    err.hidden = !msg;
    if (msg) el.setAttribute("aria-invalid", "true"); else el.removeAttribute("aria-invalid");
  }
  $("age").addEventListener("input", () => { if (!$("age-error").hidden) showAgeProblem(ageProblem()); });

  function patientDetails() {
    const m = {};
    const age = $("age").value.trim();
    if (age !== "") m.age = Number(age);
    if ($("sex").value) m.sex = $("sex").value;
    if ($("site").value) m.site = $("site").value;
    return Object.keys(m).length ? m : null;
  }

  drop.addEventListener("click", () => fileInput.click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fileInput.click(); }
  });
  fileInput.addEventListener("change", () => {
    takeFile(fileInput.files[0]);
    fileInput.value = "";  // so that choosing the same file again (after another one) is seen as a change
  });
  // The zone stays lit while the pointer is over its text or preview: moving onto a child fires dragenter on
  // the child before dragleave on the zone, so entries and exits are counted.
  let dragDepth = 0;
  drop.addEventListener("dragenter", (e) => { e.preventDefault(); dragDepth += 1; drop.classList.add("over"); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) drop.classList.remove("over");
  });
  drop.addEventListener("drop", () => { dragDepth = 0; drop.classList.remove("over"); });
  const carriesFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  // A file dropped beside the drop zone would otherwise be opened by the browser in place of this page (and
  // everything on it lost): the whole page takes a dropped file.
  window.addEventListener("dragover", (e) => {
    if (carriesFiles(e) || drop.contains(e.target)) { e.preventDefault(); e.dataTransfer.dropEffect = "copy"; }
  });
  window.addEventListener("drop", (e) => {
    if (!carriesFiles(e) && !drop.contains(e.target)) return;  // text dragged into a field, say
    e.preventDefault();
    takeDrop(e.dataTransfer);
  });

  function takeDrop(dt) {
    const files = Array.from((dt && dt.files) || []);
    // a folder comes as a File too; the entry API tells them apart where the browser has it
    const entries = Array.from((dt && dt.items) || []).filter((i) => i.kind === "file")
      .map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
    const isFolder = (k) => Boolean(entries[k] && entries[k].isDirectory);
    if (!files.length) {
      clearImage();
      setStatus("Nothing to read in what was dropped: drop an image file (an image dragged from a web page " +
                "must be saved to a file first).", true);
      return;
    }
    const k = files.findIndex((f, i) => !isFolder(i));
    if (k < 0) {
      clearImage();
      setStatus("“" + files[0].name + "” is a folder. Drop one image file from it.", true);
      return;
    }
    const note = files.length > 1 ? "Only one image is read at a time: of the " + files.length +
      " items dropped, “" + files[k].name + "” was taken." : "";
    takeFile(files[k], note);
  }

  btn.addEventListener("click", async () => {
    if (!dataUrl) return;
    const problem = $("patient").hidden ? null : ageProblem();
    showAgeProblem(problem);
    if (problem) {
      $("patient").open = true;
      $("age").focus();
      // the result on screen would read as this form's answer, which it is not
      $("result").hidden = true;
      setStatus("Nothing was sent: check the age under Patient details.", true);
      return;
    }
    const seq = imageSeq;
    const ctrl = new AbortController();
    if (inFlight) inFlight.abort();
    inFlight = ctrl;
    // false once another image was taken or another request started: this answer is then not shown
    const current = () => seq === imageSeq && inFlight === ctrl;
    btn.disabled = true;
    setStatus("Classifying…");
    const headers = { "Content-Type": "application/json" };
    const key = $("api-key").value.trim();
    if (key) headers["X-API-Key"] = key;
    const request = JSON.stringify({ image: dataUrl, tta: $("tta").checked, explain: true,
                                     metadata: $("patient").hidden ? null : patientDetails() });
    const limitMs = requestLimitMs(request.length);
    let timedOut = false;
    // the same controller as a newer image's abort (AbortSignal.any is too recent), told apart by timedOut
    const timer = setTimeout(() => { timedOut = true; ctrl.abort(); }, limitMs);
    let resp, body;
    try {
      resp = await fetch("/predict", { method: "POST", headers: headers, body: request, signal: ctrl.signal });
      body = await resp.json().catch(() => null);
    } catch (err) {
      if (!current()) return;  // aborted because another image was taken
      if (!timedOut) {
        console.error("dermalens: /predict failed", err);
        failed("Could not reach the dermalens server. Check that it is running, then press Predict again.");
        return;
      }
    } finally {
      clearTimeout(timer);
    }
    if (!current()) return;
    if (timedOut && !body) {  // before the answer, or while its body was read
      failed("Could not classify: no answer came within " + Math.ceil(limitMs / 1000) + " s, so the page " +
             "stopped waiting (the server, or a proxy in front of it, held the request). Press Predict again in a " +
             "moment, or without test-time augmentation, which is slower; if it happens again, tell whoever runs " +
             "the server.");
      return;
    }
    if (resp.status === 401) {
      // The server has DERMALENS_API_KEY set: ask for the key here instead of failing for good.
      failed(key ? "That API key was not accepted. Check it and press Predict again."
                 : "This server needs an API key: enter it above and press Predict again.");
      $("key-row").hidden = false;
      $("api-key").focus();
      return;
    }
    if (key) sessionStorage.setItem("dermalens-api-key", key);
    if (!resp.ok || !body || !body.success) {
      const err = body && body.error && typeof body.error.message === "string" ? body.error : null;
      failed("Could not classify: " + (err ? inWords(resp.status, err) : resp.ok
        ? "the server's answer could not be read." : httpProblem(resp.status)));
      return;
    }
    inFlight = null;
    btn.disabled = false;
    try {
      show(body);
    } catch (err) {
      // The server answered; the page could not display it. Say so, and show no half-filled result.
      console.error("dermalens: could not show the answer", err, body);
      failed("Could not show the answer: " + (err && err.message ? err.message : String(err)));
      return;
    }
    setStatus("Done.");
    // Keyboard and screen-reader users land on the result (Predict was disabled while it ran, which drops the
    // focus to the page); on a phone this also scrolls the result, below the form, into view.
    if (focusLost()) $("result-h").focus();
  });

  const focusLost = () => !document.activeElement || document.activeElement === document.body ||
    document.activeElement === btn;

  // The request failed: no result is left on the page (it would answer an earlier request, made perhaps with
  // other patient details or test-time augmentation), the reason is said in words, and Predict can be pressed
  // again.
  function failed(msg) {
    inFlight = null;
    $("result").hidden = true;
    btn.disabled = false;
    setStatus(msg, true);
    if (focusLost()) btn.focus();
  }

  // An error the dermalens server described: its message, with what to do where the code alone says it.
  function inWords(status, err) {
    const msg = err.message.trim();
    const sentence = /[.!?…]$/.test(msg) ? msg : msg + ".";
    // the server's own message says what to send: the page adds its advice only where it does not (not twice)
    if (err.code === "payload_too_large") return "the image is too large for this server (" + msg + ")." +
      (/\bsend\b/i.test(msg) ? "" : " Choose a smaller image or a smaller copy of it.");
    if (err.code === "timeout") return sentence + " Try again, or without test-time augmentation, which is slower.";
    if (err.code === "overloaded") return sentence + " Press Predict again in a moment.";
    return sentence;
  }

  // An error answer without a dermalens message (from a proxy in front of the server, or a crashed worker).
  function httpProblem(status) {
    const words = {
      400: "the server could not read the request.",
      403: "the server refused the request (access denied).",
      404: "this server has no prediction service at this address.",
      408: "sending the image took too long. Try again.",
      413: "the image is too large for this server. Choose a smaller image or a smaller copy of it.",
      415: "the server does not accept this kind of file. Choose a JPEG, PNG, BMP, GIF, WEBP, TIFF, HEIC or AVIF image.",
      429: "the server is busy. Press Predict again in a moment.",
      500: "the server failed while handling this image. Try again; if it fails again, tell whoever runs it.",
      502: "the server is not available at the moment (bad gateway). Try again in a moment.",
      503: "the server is busy or not ready. Try again in a moment.",
      504: "the server took too long to answer. Try again, or without test-time augmentation.",
    }[status] || (status >= 500 ? "the server failed. Try again in a moment." : "the server refused the request.");
    return words + " (HTTP " + status + ")";
  }

  $("heat").addEventListener("change", () => {
    $("overlay").hidden = !$("heat").checked || !$("overlay").src;
  });

  function pct(p) { return (100 * p).toFixed(1) + " %"; }

  function show(r) {
    $("result").hidden = false;
    const inDist = r.quality.in_distribution;
    const ood = $("ood");
    ood.hidden = inDist;
    $("summary").hidden = !inDist;
    $("scores").hidden = !inDist;  // no class scores for an image that was not assessed
    $("explain").hidden = !inDist;  // nor a heat-map: there is no class for it to explain
    if (!inDist) {
      // No diagnosis at all: the reasons, in words, and what to send instead.
      ood.innerHTML = "";
      const h = document.createElement("strong");
      h.textContent = "Not assessed";
      const ul = document.createElement("ul");
      (r.quality.reasons || []).forEach((reason) => {
        const li = document.createElement("li");
        li.textContent = reason.message + ".";
        li.dataset.code = reason.code;
        ul.appendChild(li);
      });
      const rec = document.createElement("p");
      rec.textContent = r.risk.recommendation;
      ood.append(h, ul, rec);
      $("overlay").hidden = true;
      $("overlay").removeAttribute("src");  // an earlier image's heat-map must not come back with the checkbox
      $("model-info").textContent = "Model: " + r.model.name + " " + r.model.version;
      return;
    }
    const top = r.prediction;
    $("top-name").textContent = top.predicted_class;
    $("top-conf").textContent = pct(top.confidence);
    $("uncertain").hidden = !inDist || top.confident;
    const reweighted = $("reweighted");
    reweighted.hidden = !inDist || top.most_probable === top.code;
    if (!reweighted.hidden) {
      const mp = r.predictions.find((p) => p.code === top.most_probable);
      reweighted.textContent = "Predicted over the more probable " + mp.label + " (" + pct(mp.prob) +
        ") because rarer diagnoses are weighted up in close calls (see the model card).";
    }
    $("risk-level").textContent = "Risk: " + r.risk.level;
    $("risk-text").textContent = r.risk.recommendation;
    $("risk").style.borderLeftColor = COLOURS[r.risk.level] || "#999";
    $("mal-score").textContent = pct(r.malignancy.probability) + " (" + r.malignancy.label + ")";
    $("mal-thr").textContent = pct(r.malignancy.threshold);
    $("mal-bar").style.width = pct(r.malignancy.probability).replace(" ", "");
    $("mal-mark").style.left = pct(r.malignancy.threshold).replace(" ", "");
    const bars = $("bars");
    bars.innerHTML = "";
    const malignant = new Set(["akiec", "bcc", "mel"]);
    r.predictions.forEach((p) => {
      const li = document.createElement("li");
      li.dataset.code = p.code;
      li.dataset.prob = p.prob;
      if (malignant.has(p.code)) li.classList.add("malignant");
      const name = document.createElement("span"); name.textContent = p.label;
      const bar = document.createElement("div"); bar.className = "bar";
      bar.setAttribute("role", "meter"); bar.setAttribute("aria-label", p.label);
      bar.setAttribute("aria-valuemin", "0"); bar.setAttribute("aria-valuemax", "100");
      bar.setAttribute("aria-valuenow", (100 * p.prob).toFixed(1));
      const fill = document.createElement("div"); fill.style.width = (100 * p.prob).toFixed(1) + "%";
      bar.appendChild(fill);
      const val = document.createElement("span"); val.className = "val"; val.textContent = pct(p.prob);
      li.append(name, bar, val);
      bars.appendChild(li);
    });
    const overlay = $("overlay");
    if (r.explanation) { overlay.src = r.explanation.overlay; }
    overlay.hidden = !$("heat").checked || !r.explanation;
    $("model-info").textContent = "Model: " + r.model.name + " " + r.model.version +
      (r.tta ? " · test-time augmentation" : "") +
      (r.metadata && r.metadata.used ? " · patient details used" : " · image only (no patient details used)");
  }
})();
