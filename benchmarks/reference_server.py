"""A seed-style reference server, for `make bench-compare` only (never part of dermalens serving).

What a first prototype looks like: Flask, the network in eager PyTorch (the training code's model
factory, loaded from a training checkpoint), Pillow preprocessing per request, `POST /predict` with
base64 JSON. Same network and input size as the bundle, so the comparison measures the serving stack.

    python benchmarks/reference_server.py --checkpoint checkpoints/lite2_224x300_distill_cpu --port 8766
"""
from __future__ import annotations

import argparse
import base64
import io

import numpy as np
import torch
from flask import Flask, jsonify, request
from PIL import Image

from dermalens.classes import CLASSES
from dermalens.train.models import model_from_checkpoint


def create_app(checkpoint: str, input_size: tuple[int, int]) -> Flask:
    model, _ = model_from_checkpoint(checkpoint)
    h, w = input_size
    app = Flask("reference")

    @app.post("/predict")
    def predict():
        img = Image.open(io.BytesIO(base64.b64decode(request.get_json()["image"]))).convert("RGB")
        x = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), np.float32) / 255
        x = torch.from_numpy(((x - 0.5) / 0.5).transpose(2, 0, 1)[None].copy())
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)[0].tolist()
        top = int(np.argmax(probs))
        return jsonify({"success": True, "predicted_class": CLASSES[top].code, "probabilities": probs})

    @app.get("/health")
    def health():
        return jsonify({"status": "healthy"})

    return app


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", default="checkpoints/lite2_224x300_distill_cpu")
    ap.add_argument("--input-size", default="256x341", help="height x width (the bundle's)")
    ap.add_argument("--port", type=int, default=8766)
    a = ap.parse_args(argv)
    h, w = (int(v) for v in a.input_size.split("x"))
    create_app(a.checkpoint, (h, w)).run(host="127.0.0.1", port=a.port, threaded=True)


if __name__ == "__main__":
    main()
