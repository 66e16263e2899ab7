"""`dermalens train`: fine-tune a backbone on the committed split, resumable, DDP-ready.

Every epoch writes `checkpoint_last.pt` (model, optimiser, scheduler, epoch, history and
RNG state) atomically, so a run killed with `kill -9` resumes from the last finished
epoch. The augmentation and sampling RNG of an epoch is seeded from (seed, epoch, rank),
which makes a resumed run draw the same batches the uninterrupted one would have.
Under `torchrun`, DistributedDataParallel uses gloo on CPU and nccl (with bf16 autocast)
on CUDA; every rank evaluates the full validation set, so all ranks take the same
early-stopping decision without talking about it.
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from timm.utils import ModelEmaV3
from tqdm import tqdm

from ..classes import CODES
from ..data import balanced_subset, load_ham10000, select_split, split_sha256
from ..evaluate.metrics import classification_metrics
from ..preprocess import PreprocessSpec
from .augment import normalize_batch, train_transform
from .cache import load_pixels
from ..paths import cannot_write_in, nearest_existing
from .checkpoint_io import restore_rng, rng_state, safe_load
from .config import TrainConfig
from .stages import earlier_stages
from .models import BACKBONES, create_model, load_checkpoint
from .teacher import load_teacher


def preprocess_spec(cfg: TrainConfig) -> PreprocessSpec:
    b = BACKBONES[cfg.backbone]
    # match_orientation changes nothing in training (every HAM10000 frame is landscape, like the
    # input size); it tells serving to turn portrait images, which train_transform's rotations cover.
    return PreprocessSpec(input_size=tuple(cfg.input_size), resize=cfg.resize, mean=b.mean, std=b.std,
                          color_constancy=cfg.color_constancy, match_orientation=True)


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world, rank


def class_weights(labels: np.ndarray, power: float) -> torch.Tensor:
    counts = np.bincount(labels, minlength=len(CODES)).astype(np.float64)
    w = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** power, 0.0)
    w = w / (w[counts > 0].mean() if (counts > 0).any() else 1.0)
    return torch.tensor(w, dtype=torch.float32)


def _epoch_indices(labels, cfg: TrainConfig, epoch: int, world: int, rank: int) -> np.ndarray:
    rng = np.random.default_rng([cfg.seed, epoch])
    n = len(labels)
    if cfg.balanced_sampler:
        counts = np.bincount(labels, minlength=len(CODES))
        p = 1.0 / counts[labels]
        idx = rng.choice(n, size=n, replace=True, p=p / p.sum())
    else:
        idx = rng.permutation(n)
    per_rank = len(idx) // world  # equal step counts on every rank, as DDP needs
    return idx[rank * per_rank:(rank + 1) * per_rank]


class AugmentedBatches(torch.utils.data.Dataset):
    """Item `step` is the augmented uint8 batch of that step, so augmentation can run in
    DataLoader workers. With no workers the items are made in order in this process, drawing
    the same random numbers as a plain loop; with workers, each worker is seeded by the
    DataLoader from the epoch's torch seed, so a run is still repeatable for a given count."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, idx: np.ndarray, batch_size: int, tf,
                 soft: np.ndarray | None = None):
        self.pixels, self.labels, self.idx, self.batch_size, self.tf = pixels, labels, idx, batch_size, tf
        self.soft = soft

    def __len__(self):
        return max(1, len(self.idx) // self.batch_size)  # a tiny smoke-test split still gets one step

    def __getitem__(self, step):
        b = self.idx[step * self.batch_size:(step + 1) * self.batch_size]
        x = torch.stack([self.tf(torch.from_numpy(self.pixels[i]).permute(2, 0, 1)) for i in b])
        soft = torch.from_numpy(self.soft[b]) if self.soft is not None else torch.zeros(0)
        return x, torch.from_numpy(self.labels[b]), soft


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor, criterion,
                      weight: float) -> torch.Tensor:
    """(1 - weight) * the label loss + weight * cross-entropy against the teacher's probabilities.
    The teacher term is unweighted: the teacher's probabilities already say how sure to be."""
    hard = criterion(logits, labels)
    if not weight or soft.numel() == 0:
        return hard
    return (1 - weight) * hard - weight * (soft * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    total = max(warm + 1, cfg.epochs * steps_per_epoch)

    def f(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / (total - warm))))
    return f


@torch.no_grad()
def predict_logits(model, pixels: np.ndarray, spec: PreprocessSpec, device, batch_size: int = 64) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(pixels), batch_size):
        x = torch.from_numpy(pixels[i:i + batch_size]).permute(0, 3, 1, 2).to(device)
        x = normalize_batch(x, spec.mean, spec.std).contiguous(memory_format=torch.channels_last)
        out.append(model(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CODES)), np.float32)


def _atomic_save(obj, path: Path):
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def plot_curves(history: list[dict], path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(ep, [h["train_loss"] for h in history], "o-", label="train loss")
    ax[0].plot(ep, [h["val_loss"] for h in history], "o-", label="val loss")
    ax[0].set_xlabel("epoch"); ax[0].legend(); ax[0].set_title("loss")
    for key in ("val_balanced_accuracy", "val_accuracy", "val_macro_auroc"):
        ax[1].plot(ep, [h[key] for h in history], "o-", label=key.replace("val_", "val "))
    ax[1].set_xlabel("epoch"); ax[1].set_ylim(0, 1); ax[1].legend(); ax[1].set_title("validation")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None) -> Path:
    """Train per `cfg`; `stop_after` ends this call after that many epochs (a planned interruption)."""
    problems = cfg.problems()
    if problems:
        raise ValueError("; ".join(problems))
    # config.json is read again by --resume and export from any folder: every path in it is absolute
    for key in ("data_root", "split_file", "cache_dir", "teacher"):
        if getattr(cfg, key):
            setattr(cfg, key, str(Path(getattr(cfg, key)).resolve()))
    if cfg.init_from:  # a resume needs no earlier file: it has its weights (the stage it came from may be gone)
        cfg.init_from = str(_init_checkpoint(cfg.init_from, must_exist=not resume).resolve())
    out = Path(cfg.out_dir)
    earlier = [f.name for f in (out / "checkpoint_last.pt", out / "best.pt") if f.is_file()]
    if earlier and not resume:
        # starting afresh would overwrite an earlier run's checkpoints: a forgotten --resume must not cost it
        raise FileExistsError(f"{out} already holds a training run ({', '.join(earlier)}); pass --resume to "
                              "continue it, or choose another --out (delete the folder to start it again)")
    if (out / "card.json").is_file():  # a run's history.csv and curves.png would replace the bundle's
        raise FileExistsError(f"--out {out} is a model bundle (from dermalens export), not a run folder; give "
                              "another --out for the training run")
    _check_writable(out)
    world, rank = _dist_info()
    ck = None
    last = out / "checkpoint_last.pt"
    if resume:  # checked before any data is decoded: a refused resume costs a second
        if not last.is_file():
            hint = (" (no epoch of it finished before it stopped, so nothing was saved: run the same command "
                    "without --resume to start it again)" if (out / "config.json").is_file() else "")
            raise FileNotFoundError(f"--resume: no checkpoint at {last}{hint}")
        ck = safe_load(last, map_location="cpu")
        conflicts = cfg.resume_conflicts(ck["config"])
        ran_on = _processes(ck)
        if ran_on != world:
            # each process's batches and the learning-rate schedule's steps per epoch depend on it
            conflicts.append(f"processes: {ran_on} -> {world} (run it as it was started: "
                             + ("without torchrun" if ran_on == 1 else f"torchrun --nproc_per_node={ran_on}") + ")")
        if conflicts:
            raise ValueError(f"--resume continues {out} exactly as it was started, but these settings differ: "
                             f"{'; '.join(conflicts)}. Resume with the run's own settings (`dermalens train --resume "
                             f"--out {out}` reads {out / 'config.json'}), or start a new run from its weights with "
                             f"--init-from {out / 'best.pt'}")
    split_file = Path(cfg.split_file)
    # a missing split file is reported by select_split below, in the data layer's words
    split_hash = split_sha256(split_file) if split_file.is_file() else None
    init = None
    if cfg.init_from and not resume:  # checked before minutes go into decoding the data; a resume has its weights
        init = load_checkpoint(cfg.init_from)
        if init["config"]["backbone"] != cfg.backbone:
            raise ValueError(f"init_from {cfg.init_from} is a {init['config']['backbone']}, not a {cfg.backbone}")
        if init.get("split_sha256", split_hash) != split_hash:
            raise ValueError(f"init_from {cfg.init_from} was trained on another split than {cfg.split_file}: its "
                             "training images could be in this split's validation and test parts")
    if cfg.teacher and not Path(cfg.teacher).is_file():
        raise FileNotFoundError(f"teacher: {cfg.teacher} not found (make it with `python -m dermalens.train.teacher`)")
    # the training time of the stages this run starts from, for the card: export then needs no earlier file
    stages = (ck or {}).get("earlier_stages")
    if init is not None:
        stages = earlier_stages(init, cfg.init_from)
    records = load_ham10000(cfg.data_root)
    train_recs = balanced_subset(select_split(records, "train", split_file), cfg.max_images_per_split)
    val_recs = balanced_subset(select_split(records, "val", split_file), cfg.max_images_per_split)
    distributed = world > 1
    use_cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    if distributed:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif distributed and not use_cuda:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    main = rank == 0
    out.mkdir(parents=True, exist_ok=True)
    spec = preprocess_spec(cfg)

    cache = Path(cfg.cache_dir) if cfg.cache_dir else None
    decoders = max(1, min(8, os.cpu_count() or 1))
    train_px = load_pixels(train_recs, spec, cache, workers=decoders, desc="decode train")
    val_px = load_pixels(val_recs, spec, cache, workers=decoders, desc="decode val")
    y_train = np.array([r.label for r in train_recs])
    y_val = np.array([r.label for r in val_recs])
    soft = load_teacher(cfg.teacher, [r.image_id for r in train_recs], len(CODES)) if cfg.teacher else None

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.backbone, len(CODES), pretrained=cfg.pretrained and not cfg.init_from,
                         drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate)
    if init is not None:
        model.load_state_dict(init["model"])
    model = model.to(device).to(memory_format=torch.channels_last)
    weights = class_weights(y_train, cfg.class_weight_power) if cfg.class_weight_power else None
    criterion = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device),
                                    label_smoothing=cfg.label_smoothing)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, (len(train_px) // world) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps_per_epoch))
    net = nn.parallel.DistributedDataParallel(model) if distributed else model
    # The EMA copy is what gets validated and saved: it averages out the last epochs' noise,
    # which makes the early-stopping choice less of a coin toss on a small validation split.
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay else None
    eval_model = ema.module if ema is not None else model

    start_epoch, history, best, bad_epochs, train_seconds = 0, [], -1.0, 0, 0.0
    if ck is not None:
        model.load_state_dict(ck["train_model"] if ema is not None else ck["model"])
        if ema is not None:
            ema.module.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, history, best = ck["epoch"] + 1, ck["history"], ck["best"]
        bad_epochs, train_seconds = ck["bad_epochs"], ck.get("train_seconds", 0.0)
        restore_rng(ck["rng"])
        if main and (start_epoch >= cfg.epochs or bad_epochs >= cfg.patience
                     or (cfg.stop_after_epochs and start_epoch >= cfg.stop_after_epochs)):
            why = (f"all {cfg.epochs} epochs" if start_epoch >= cfg.epochs else
                   f"stopped early after epoch {start_epoch} (patience {cfg.patience})" if bad_epochs >= cfg.patience
                   else f"stop_after_epochs {cfg.stop_after_epochs}")
            print(f"nothing to resume: {out} has already finished ({why}); its checkpoints are as they were",
                  flush=True)
        del ck
    if main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    tf = train_transform(tuple(cfg.input_size))
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if use_cuda else torch.autocast("cpu", enabled=False)
    for epoch in range(start_epoch, cfg.epochs):
        if bad_epochs >= cfg.patience:
            if main:
                print(f"early stopping: no better validation balanced accuracy for {cfg.patience} epochs")
            break
        if stop_after is not None and epoch - start_epoch >= stop_after:
            break
        if cfg.stop_after_epochs and epoch >= cfg.stop_after_epochs:
            break
        t0 = time.time()
        torch.manual_seed(hash((cfg.seed, epoch, rank)) % (2**31))
        idx = _epoch_indices(y_train, cfg, epoch, world, rank)
        net.train()
        total, seen = 0.0, 0
        batches = torch.utils.data.DataLoader(
            AugmentedBatches(train_px, y_train, idx, cfg.batch_size, tf, soft), batch_size=None, shuffle=False,
            num_workers=cfg.loader_workers, pin_memory=use_cuda, prefetch_factor=4 if cfg.loader_workers else None)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not main)
        for step, (x, y, soft_y) in enumerate(bar):
            x = x.to(device, non_blocking=True)
            x = normalize_batch(x, spec.mean, spec.std).contiguous(memory_format=torch.channels_last)
            y, soft_y = y.to(device, non_blocking=True), soft_y.to(device, non_blocking=True)
            with amp:
                loss = distillation_loss(net(x).float(), y, soft_y, criterion, cfg.distill_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model, step=epoch * steps_per_epoch + step + 1)
            total += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{total / seen:.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        if distributed:
            # the history's training loss is that of every process's batches, not rank 0's alone
            sums = torch.tensor([total, float(seen)], dtype=torch.float64, device=device)
            dist.all_reduce(sums)
            total, seen = float(sums[0]), int(sums[1])
            # DDP keeps parameters in step, but BatchNorm running statistics are per rank until
            # the next forward; take rank 0's so every rank validates (and saves) the same model.
            for buf in eval_model.buffers():
                dist.broadcast(buf, 0)
            if ema is not None:
                for buf in model.buffers():
                    dist.broadcast(buf, 0)
        logits = predict_logits(eval_model, val_px, spec, device)
        probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
        m = classification_metrics(y_val, probs)
        val_loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y_val)))
        train_seconds += time.time() - t0
        row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_loss": val_loss,
               "val_accuracy": m["accuracy"], "val_balanced_accuracy": m["balanced_accuracy"],
               "val_macro_auroc": m["macro_auroc"], "lr": sched.get_last_lr()[0],
               "seconds": time.time() - t0}
        history.append(row)
        improved = m["balanced_accuracy"] > best
        if improved:
            best, bad_epochs = m["balanced_accuracy"], 0
        else:
            bad_epochs += 1
        if main:
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            meta = {"config": cfg.to_dict(), "preprocess": spec.to_dict(), "classes": list(CODES),
                    "split_sha256": split_hash,  # export refuses to calibrate and test on another split
                    "epoch": epoch, "val_metrics": m, "train_seconds": train_seconds,
                    "hardware": _hardware(world, use_cuda), "world_size": world}
            if stages is not None:
                meta["earlier_stages"] = stages
            if improved:
                _atomic_save({**meta, "model": eval_model.state_dict()}, out / "best.pt")
            extra = {"train_model": model.state_dict()} if ema is not None else {}
            _atomic_save({**meta, "model": eval_model.state_dict(), **extra, "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict(), "history": history, "best": best,
                          "bad_epochs": bad_epochs,
                          "rng": rng_state()}, last)
            _write_history(history, out)
        if distributed:
            dist.barrier()
    if distributed:
        # each rank records a digest of its weights: DDP must leave them identical
        (out / f"weights_rank{rank}.sha256").write_text(weights_digest(eval_model))
        dist.destroy_process_group()
    return out


def _init_checkpoint(path: str, must_exist: bool = True) -> Path:
    """The file --init-from names: a checkpoint, or a run folder's best.pt (as export and compare take it)."""
    p = Path(path)
    if not must_exist:
        return p / "best.pt" if (p / "best.pt").is_file() else p
    if p.is_dir():
        if (p / "best.pt").is_file():
            return p / "best.pt"
        what = ("a model bundle (from dermalens export); a later stage starts from the training run it was "
                "exported from" if (p / "card.json").is_file() else "a folder without best.pt")
        raise FileNotFoundError(f"init_from: {path} is {what}: give a run folder holding best.pt, or its best.pt")
    if not p.is_file():
        raise FileNotFoundError(f"init_from: {path} not found (train the earlier stage first, or pass "
                                "--init-from with its best.pt)")
    return p


def _processes(ck: dict) -> int:
    """How many processes trained a checkpoint (checkpoints from before "world_size" say it in "hardware")."""
    if "world_size" in ck:
        return int(ck["world_size"])
    m = re.match(r"(\d+) process", str(ck.get("hardware", "")))
    return int(m.group(1)) if m else 1


def _check_writable(out: Path) -> None:
    """Refuse an --out where no checkpoint could be saved, before any data is decoded."""
    where = nearest_existing(out)
    why = cannot_write_in(where)
    if why:
        raise PermissionError(f"out_dir {out} cannot be written ({where}: {why}); choose a folder you can write "
                              "with --out")


def weights_digest(model: nn.Module) -> str:
    import hashlib
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _hardware(world: int, cuda: bool) -> str:
    dev = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    return f"{world} process(es) on {dev}, torch {torch.__version__}"


def _write_history(history: list[dict], out: Path):
    (out / "history.json").write_text(json.dumps(history, indent=2))
    with open(out / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    plot_curves(history, out / "curves.png")
