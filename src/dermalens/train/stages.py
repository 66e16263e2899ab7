"""The training stages behind a checkpoint (a run started `--init-from` an earlier one), as the card reports them."""
from __future__ import annotations

from pathlib import Path

from .models import load_checkpoint


def stage_record(ck: dict, checkpoint: str | None = None) -> dict:
    """One training stage as the card reports it."""
    rec = {"out_dir": ck["config"]["out_dir"], "input_size": list(ck["config"]["input_size"]),
           "best_epoch": ck["epoch"] + 1, "seconds": round(ck["train_seconds"], 1), "hardware": ck["hardware"]}
    if checkpoint is not None:
        rec["checkpoint"] = str(checkpoint)
    return rec


def init_chain(init_from: str | None) -> tuple[list[dict], str | None]:
    """The stages of the `init_from` checkpoint and of every one it started from in turn, earliest first, and the
    first of those files that is missing (None when all are there; the list then stops short of it)."""
    chain, prev = [], init_from
    while prev:
        if not Path(prev).is_file():
            return chain, prev
        ck = load_checkpoint(prev)
        chain.insert(0, stage_record(ck, prev))
        prev = ck["config"].get("init_from")
    return chain, None


def stages_before(ck: dict) -> tuple[list[dict], str | None]:
    """(the stages a checkpoint's run started from, the first missing file of that chain or None): the ones it
    recorded, or for a checkpoint from before that record, its init_from chain walked."""
    recorded = ck.get("earlier_stages")
    if recorded is not None:
        return recorded, None
    return init_chain(ck.get("config", {}).get("init_from"))


def earlier_stages(init: dict, init_path: str) -> list[dict] | None:
    """The stages before this run: the init_from checkpoint's own, and its earlier ones. Recorded in this
    run's checkpoints so that export does not need the earlier files (moved, deleted, or named relative
    to another folder). None when an earlier file is already missing (export then says which)."""
    chain, missing = stages_before(init)
    return None if missing else [*chain, stage_record(init, init_path)]
