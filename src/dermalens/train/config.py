"""Training configuration: a dataclass, loadable from JSON and overridable by flags."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..defaults import DEFAULT_DATA, DEFAULT_SPLIT_FILE, default_cache
from ..paths import file_in_the_way


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
    data_root: str = DEFAULT_DATA
    split_file: str = str(DEFAULT_SPLIT_FILE)
    out_dir: str = "runs/default"
    cache_dir: str = str(default_cache())  # the same folder from any working directory
    max_images_per_split: int = 0  # >0 only for smoke tests
    stop_after_epochs: int = 0  # >0: end the run after this many epochs (the LR schedule still spans `epochs`)
    ema_decay: float = 0.0  # >0: validate and ship an exponential moving average of the weights
    init_from: str = ""  # start from another run's best.pt (a second, low-LR stage), not from ImageNet
    teacher: str = ""  # soft targets for distillation (`python -m dermalens.train.teacher`)
    distill_weight: float = 0.0  # loss = (1 - w) * CE(labels) + w * CE(teacher probabilities)
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        data = read_settings(path)
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{path}: unknown config key(s) {sorted(unknown)}; valid: {sorted(names)}")
        cfg = cls(**data)
        if isinstance(cfg.input_size, list):
            cfg.input_size = tuple(cfg.input_size)
        problems = cfg.problems()
        if problems:
            raise ValueError(f"{path}: " + "; ".join(problems))
        return cfg

    # Settings that may change between a run and its --resume: where things are and how fast they
    # go, not what is learnt. Any other change would make the resumed run a different run.
    RESUMABLE_CHANGES = ("out_dir", "cache_dir", "data_root", "threads", "loader_workers", "patience",
                         "stop_after_epochs")

    def resume_conflicts(self, saved: dict) -> list[str]:
        """Differences from the config a run was started with (checkpoint_last.pt's) that --resume cannot honour."""
        now = self.to_dict()
        def same(k):  # a file named relative by a run from before absolute paths were recorded
            if k in ("split_file", "init_from", "teacher") and isinstance(saved[k], str) and isinstance(now[k], str):
                if not saved[k] or not now[k]:
                    return saved[k] == now[k]
                return Path(saved[k]).resolve() == Path(now[k]).resolve()
            return _same(saved[k]) == _same(now[k])
        return [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in now
                if k not in self.RESUMABLE_CHANGES and k in saved and not same(k)]

    def problems(self) -> list[str]:
        """Every setting that cannot work, in words; empty when the config is usable. Checked before
        any data is decoded, so a typo costs a second, not a decoded data set or a half-run."""
        from ..preprocess import PreprocessSpec
        from .models import BACKBONES
        out = []

        def number(name, low, high=None, *, integer=False, low_open=False, high_open=False):
            v = getattr(self, name)
            kind = int if integer else (int, float)
            if isinstance(v, bool) or not isinstance(v, kind):
                out.append(f"{name} must be {'an integer' if integer else 'a number'}, got {v!r}")
            elif (v <= low if low_open else v < low) or (high is not None and (v >= high if high_open else v > high)):
                if high is None:
                    want = f"{'above' if low_open else 'at least'} {low}"
                else:
                    ends = [e for e, is_open in ((str(low), low_open), (str(high), high_open)) if is_open]
                    want = f"between {low} and {high}" + (f" ({' and '.join(ends)} excluded)" if ends else "")
                out.append(f"{name} must be {want}, got {v!r}")

        def flag(name):  # "false" in quotes is a true string: refused, not read by truthiness
            v = getattr(self, name)
            if not isinstance(v, bool):
                out.append(f"{name} must be true or false (JSON, without quotes), got {v!r}")

        def path(name, kind, empty=None):  # empty: what "" means where it is allowed
            v = getattr(self, name)
            if not isinstance(v, str) or (not v and empty is None):
                allowed = f'; "" for {empty}' if empty else ""
                out.append(f"{name} must be a {kind} path (text{allowed}), got {v!r}")
            elif kind == "folder" and v and file_in_the_way(v):
                # mkdir would say only "[Errno 17] File exists", after the init_from checkpoint was read
                out.append(f"{name} {v} is a file or lies inside one; give a folder")

        if not isinstance(self.backbone, str) or self.backbone not in BACKBONES:
            out.append(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        try:  # the preprocessing settings are checked where they are defined
            PreprocessSpec(input_size=self.input_size, resize=self.resize, color_constancy=self.color_constancy)
        except ValueError as e:
            out.append(str(e))
        number("epochs", 1, integer=True)
        number("batch_size", 1, integer=True)
        number("lr", 0)  # 0 is useful: a stage that only re-estimates batch-norm statistics
        number("weight_decay", 0)
        number("warmup_epochs", 0)
        number("label_smoothing", 0, 1, high_open=True)
        number("class_weight_power", 0)
        number("drop_rate", 0, 1, high_open=True)
        number("drop_path_rate", 0, 1, high_open=True)
        number("patience", 1, integer=True)
        number("seed", 0, integer=True)
        number("threads", 0, integer=True)
        number("loader_workers", 0, integer=True)
        number("max_images_per_split", 0, integer=True)
        number("stop_after_epochs", 0, integer=True)
        number("ema_decay", 0, 1, high_open=True)
        number("distill_weight", 0, 1)
        flag("pretrained")
        flag("balanced_sampler")
        for name, kind in (("data_root", "folder"), ("split_file", "file"), ("out_dir", "folder")):
            path(name, kind)
        path("cache_dir", "folder", "no cache")
        path("init_from", "file", "none")
        path("teacher", "file", "none")
        if not isinstance(self.extra, dict):
            out.append(f"extra must be a JSON object, got {self.extra!r}")
        if self.distill_weight and not self.teacher:
            out.append("distill_weight is set but no teacher file is given")
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


def _same(v):
    return list(v) if isinstance(v, tuple) else v


def _read_json_object(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found (the committed ones are in configs/)")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of settings, not {type(data).__name__}")
    return data


def read_settings(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A config file's settings with its "base" chain applied: `"base": "other.json"` (a path relative to
    this file) takes every setting from that file, and this file's own keys replace them. So a config
    holds only what differs from the one it builds on."""
    path = Path(path)
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ValueError(f"config files name each other as base in a loop: {chain}")
    data = _read_json_object(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ValueError(f'{path}: "base" must be the path of another config file, got {base!r}')
    base_path = path.parent / base
    if not base_path.is_file():
        raise FileNotFoundError(f'{path}: its "base" {base} ({base_path}) not found')
    return {**read_settings(base_path, (*_seen, path.resolve())), **data}
