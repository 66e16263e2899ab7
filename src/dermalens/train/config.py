"""Training configuration: a dataclass, loadable from JSON and overridable by flags."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class TrainConfig:
    backbone: str = "efficientnet_lite0"
    input_size: tuple[int, int] = (144, 192)  # (height, width)
    resize: str = "stretch"
    color_constancy: str | None = None
    pretrained: bool = True
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    class_weight_power: float = 1.0  # loss weight ~ (1/frequency)**power; 0 turns it off
    balanced_sampler: bool = False
    drop_rate: float = 0.2
    drop_path_rate: float = 0.0  # stochastic depth (timm backbones)
    patience: int = 5  # early stopping on validation balanced accuracy
    seed: int = 0
    threads: int = 0  # 0: all cores
    loader_workers: int = 0  # >0: augment batches in that many worker processes (keeps a GPU fed)
    data_root: str = "../shared/data/ham10000"
    split_file: str = "splits/ham10000_split.csv"
    out_dir: str = "runs/default"
    cache_dir: str = "cache"
    max_images_per_split: int = 0  # >0 only for smoke tests
    stop_after_epochs: int = 0  # >0: end the run after this many epochs (the LR schedule still spans `epochs`)
    ema_decay: float = 0.0  # >0: validate and ship an exponential moving average of the weights
    init_from: str = ""  # start from another run's best.pt (a second, low-LR stage), not from ImageNet
    teacher: str = ""  # soft targets for distillation (`python -m dermalens.train.teacher`)
    distill_weight: float = 0.0  # loss = (1 - w) * CE(labels) + w * CE(teacher probabilities)
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        data = json.loads(Path(path).read_text())
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{path}: unknown config key(s) {sorted(unknown)}; valid: {sorted(names)}")
        cfg = cls(**data)
        cfg.input_size = tuple(cfg.input_size)
        return cfg

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d
