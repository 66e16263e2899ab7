"""Probe (issue 19): would int8 weights or batching make the bundle's graphs cheaper per image on this CPU?

    pip install nncf==3.4.0 && .venv/bin/python experiments/int8_and_batch_probe.py

For each classifier graph of models/dermalens, on one thread (as served: one thread per graph on 2 cores):
* int8: NNCF post-training quantisation (OpenVINO backend, mixed preset, 300 HAM10000 training images for
  calibration), compiled with bf16 and with f32 for the layers left in floating point, against the bf16 and
  fp32 graphs as shipped; p50 of 200 single-image runs, and the largest probability difference to fp32 over
  100 images with the share whose top class agrees;
* batching: the bf16 graph's time per image at batch 1 to 16.
"""
import csv
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
import nncf  # noqa: E402
import openvino as ov  # noqa: E402

from dermalens.defaults import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_SPLIT_FILE  # noqa: E402
from dermalens.inference import runtime as rt  # noqa: E402
from dermalens.inference.bundle import load_bundle  # noqa: E402
from dermalens.inference.softmax import softmax  # noqa: E402


def p50_ms(model, x, repeat):
    for _ in range(5):
        model.run({"image": x})
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        model.run({"image": x})
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def main():
    bundle_dir = Path(DEFAULT_MODEL)
    bundle = load_bundle(bundle_dir, threads=1)
    train = [r["image_id"] for r in csv.DictReader(open(DEFAULT_SPLIT_FILE)) if r["split"] == "train"]
    ids = np.random.default_rng(0).choice(train, 300, replace=False)
    views = np.stack([bundle.spec.to_uint8(Path(DEFAULT_DATA) / "images" / f"{i}.jpg") for i in ids])
    out = Path("/tmp/dermalens-int8-probe")
    out.mkdir(exist_ok=True)
    print("graph | compiled as | p50 ms (1 thread) | max prob. diff to fp32 | top class agrees")
    batch_rows = []
    for member, entry in zip(bundle.members, bundle.card["members"]):
        graph = bundle_dir / entry["graph"]
        x = member.normalize(views)
        model = ov.Core().read_model(str(graph))
        name = model.inputs[0].get_any_name()
        data = nncf.Dataset(range(len(x)), lambda i: {name: x[i:i + 1]})
        quantized = nncf.quantize(model, data, subset_size=len(x), preset=nncf.QuantizationPreset.MIXED)
        int8 = out / f"{member.name}.int8.xml"
        ov.save_model(quantized, str(int8), compress_to_fp16=False)
        logits = {}
        for label, path, precision in (("fp32", graph, "fp32"), ("bf16 (shipped)", graph, "bf16"),
                                       ("int8, rest bf16", int8, "bf16"), ("int8, rest f32", int8, "fp32")):
            compiled = rt.compile(path, threads=1, precision=precision, views=(member.mean, member.std))
            ms = p50_ms(compiled, member.resized(views[:1]), 200)
            logits[label] = np.concatenate([compiled.run({"image": member.resized(views[i:i + 1])})["logits"]
                                            for i in range(100)])
            ref = logits["fp32"]
            diff = np.abs(softmax(logits[label]) - softmax(ref)).max()
            agree = (logits[label].argmax(1) == ref.argmax(1)).mean()
            print(f"{member.name} | {label} | {ms:.2f} | {diff:.3f} | {agree:.0%}")
            if label == "bf16 (shipped)":
                for b in (1, 2, 4, 8, 16):
                    batch_rows.append((member.name, b, p50_ms(compiled, member.resized(views[:b]),
                                                              max(10, 200 // b)) / b))
    print("\ngraph | batch | bf16 ms per image (1 thread)")
    for name, b, ms in batch_rows:
        print(f"{name} | {b} | {ms:.2f}")


if __name__ == "__main__":
    main()
