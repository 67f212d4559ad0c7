"""``depth-distill train``: fit the FastDepth student (``fastdepth-mnv3``) to cached teacher labels.

    depth-distill train --cache cache/ --out runs/s1 --steps 20000 --batch-size 16
    torchrun --nproc_per_node 4 -m depth_estimation.distill train --cache cache/ --out runs/s1
    tensorboard --logdir runs/s1/tb

Loss (MiDaS, Ranftl et al. 2020) on relative inverse depth (disparity), per image over the valid
pixels: the target is normalized (minus its mean, divided by its mean absolute deviation, so the
loss does not depend on the teacher's units), the prediction is aligned to it by the
least-squares scale and shift (positive scale, constants for autograd: see :func:`align`), and the
loss is the mean *squared* residual (``ssi``, the quantity the least-squares fit minimizes) plus
``alpha`` (0.5) times the multi-scale (4 scales) gradient-matching loss on that residual (``grad``).

Data: the image is resized to its label's size; for training a random crop (0.5-1 of the largest
crop with the training aspect ``W/H`` times a +-10 % jitter), a horizontal flip and a colour jitter
(brightness, contrast, saturation +-20 %, image only), then a resize to ``--size`` and the ImageNet
normalization. Validation: a centre crop to the training aspect (the whole image when the aspect
already matches) and a plain resize. The mask is "label finite": the teacher's zeros (the sky,
far away) are valid targets. The split is by a hash of the cache key (stable across runs).

Data order and augmentation depend only on ``seed`` and the step (the DistributedSampler's epoch
permutations, an RNG seeded by seed/step/rank/slot), so ``--resume`` (same settings and number of
processes) continues exactly like an uninterrupted run. Under ``torchrun`` (WORLD_SIZE/RANK/
LOCAL_RANK set) the model is wrapped in DistributedDataParallel (NCCL on CUDA, gloo on CPU),
``--batch-size`` is per process and only rank 0 writes. Mixed precision (autocast + GradScaler)
is used on CUDA only.

Output in ``--out``: ``student/`` (load with ``model:=<out>/student``), ``history.json``,
``checkpoint/`` (``model.safetensors``, ``optimizer.safetensors`` + ``state.json``; no pickle) and
TensorBoard events in ``tb/`` (or ``--log-dir``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch import Tensor

from depth_estimation.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD

CHECKPOINT = "checkpoint"
SCHEDULES = ("onecycle", "cosine")
RESUME_KEYS = ("steps", "batch_size", "lr", "weight_decay", "schedule", "size", "alpha", "val_fraction", "seed")


def _labels():
    from depth_estimation.distill import labels  # written by the labelling half; imported when data is needed

    return labels


# ----------------------------------------------------------------------------------------- loss
def _normalize_target(target: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    m = mask.float()
    n = m.sum((1, 2), keepdim=True).clamp_min(1)
    t = torch.where(mask, target, torch.zeros_like(target))
    centred = t - (t * m).sum((1, 2), keepdim=True) / n
    return centred / ((centred.abs() * m).sum((1, 2), keepdim=True) / n + eps)


def align(pred: Tensor, target: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """``s * pred + t`` with the per-image least-squares scale ``s`` and shift ``t`` over ``mask``.

    Two changes to MiDaS: (1) ``s`` and ``t`` are constants for autograd. The squared residual is
    stationary in them at the least-squares fit, so its gradient is unchanged, but the gradient
    term can no longer pull ``s`` to 0 (with a differentiable fit a random student stayed
    uncorrelated with the target and ``ssi + 0.5 grad`` did not fall). (2) ``s`` is positive: when
    the fit is negative (an inverted prediction), ``s`` matches the mean absolute deviations instead,
    so the residual pushes towards the teacher's sign (near = large) rather than fitting an
    inverted student."""
    with torch.no_grad():
        m = mask.float()
        n = m.sum((1, 2), keepdim=True).clamp_min(1)
        t = torch.where(mask, target, torch.zeros_like(target))
        mp, mt = (pred * m).sum((1, 2), keepdim=True) / n, (t * m).sum((1, 2), keepdim=True) / n
        pc, tc = (pred - mp) * m, (t - mt) * m
        scale = (pc * tc).sum((1, 2), keepdim=True) / ((pc * pc).sum((1, 2), keepdim=True) + eps)
        mad = tc.abs().sum((1, 2), keepdim=True) / (pc.abs().sum((1, 2), keepdim=True) + eps)
        scale = torch.where(scale > 0, scale, mad)
        shift = mt - scale * mp
    return scale * pred + shift


def _per_image_mean(values: Tensor, mask: Tensor) -> Tensor:
    n = mask.float().sum((1, 2))
    per_image = (values * mask).sum((1, 2)) / n.clamp_min(1)
    valid = (n > 0).float()
    return (per_image * valid).sum() / valid.sum().clamp_min(1)


def _gradient_matching(residual: Tensor, mask: Tensor, scales: int) -> Tensor:
    total = residual.new_zeros(())
    for k in range(scales):
        r, m = residual[:, ::2 ** k, ::2 ** k], mask[:, ::2 ** k, ::2 ** k].float()
        r = r * m
        gx = (r[:, :, 1:] - r[:, :, :-1]).abs() * m[:, :, 1:] * m[:, :, :-1]
        gy = (r[:, 1:] - r[:, :-1]).abs() * m[:, 1:] * m[:, :-1]
        n = m.sum((1, 2))
        per_image = (gx.sum((1, 2)) + gy.sum((1, 2))) / n.clamp_min(1)
        valid = (n > 0).float()
        total = total + (per_image * valid).sum() / valid.sum().clamp_min(1)
    return total


def ssi_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Scale-and-shift-invariant loss ``[B,H,W]`` x3 -> scalar: mean squared residual of the
    least-squares-aligned prediction against the normalized target, averaged over images."""
    target = _normalize_target(target, mask)
    return _per_image_mean((align(pred, target, mask) - target) ** 2, mask)


def gradient_loss(pred: Tensor, target: Tensor, mask: Tensor, scales: int = 4) -> Tensor:
    """MiDaS multi-scale gradient matching on the aligned residual (sum over ``scales`` of the
    per-image mean |d/dx| + |d/dy| of the residual at strides 1, 2, 4, 8)."""
    target = _normalize_target(target, mask)
    return _gradient_matching(align(pred, target, mask) - target, mask, scales)


def distill_loss(pred: Tensor, target: Tensor, mask: Tensor, alpha: float = 0.5,
                 scales: int = 4) -> Tuple[Tensor, Dict[str, Tensor]]:
    """``ssi + alpha * grad`` (one alignment shared); returns (total, {"ssi", "grad"} detached)."""
    pred, target = pred.float(), target.float()
    target = _normalize_target(target, mask)
    residual = align(pred, target, mask) - target
    ssi = _per_image_mean(residual ** 2, mask)
    grad = _gradient_matching(residual, mask, scales) if alpha else ssi.new_zeros(())
    return ssi + alpha * grad, {"ssi": ssi.detach(), "grad": grad.detach()}


# ----------------------------------------------------------------------------------------- data
def _unit(key: str) -> float:
    return int(hashlib.sha1(str(key).encode("utf-8")).hexdigest()[:12], 16) / float(16 ** 12)


def split_keys(keys: Sequence[str], val_fraction: float = 0.05) -> Tuple[List[str], List[str]]:
    """Deterministic (train, val) split by key hash; at least one of each when there are >= 2 keys
    and ``val_fraction`` > 0."""
    keys = sorted(set(keys), key=lambda k: (_unit(k), str(k)))
    n_val = sum(_unit(k) < val_fraction for k in keys)
    if val_fraction > 0 and len(keys) >= 2:
        n_val = min(max(n_val, 1), len(keys) - 1)
    val = set(keys[:n_val])
    return sorted(k for k in keys if k not in val), sorted(val)


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    if a.shape[:2] == (h, w):
        return a
    shrink = h * w < a.shape[0] * a.shape[1]
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _crop_box(h: int, w: int, aspect: float, area: float = 1.0, rng=None) -> Tuple[int, int, int, int]:
    """(top, left, height, width) of a crop with ``aspect`` = w/h, ``area`` of the largest such crop."""
    cw = min(float(w), h * aspect) * math.sqrt(area)
    ch = cw / aspect
    ch, cw = max(1, min(h, int(round(ch)))), max(1, min(w, int(round(cw))))
    if rng is None:
        return (h - ch) // 2, (w - cw) // 2, ch, cw
    return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw


def _colour_jitter(img: np.ndarray, rng, strength: float = 0.2) -> np.ndarray:
    b, c, s = rng.uniform(1 - strength, 1 + strength, 3)
    img = img * b
    gray = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    img = (img - gray.mean()) * c + gray.mean()
    gray = (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    return np.clip((img - gray) * s + gray, 0.0, 1.0).astype(np.float32)


class DistillDataset(torch.utils.data.Dataset):
    """Items of the label cache as (x float32 [3,H,W] normalized, y float32 [H,W] teacher
    inverse depth, mask bool [H,W] = y finite). Index with an int (no augmentation) or, for
    training, with ``(index, seed)`` (augmentation drawn from ``seed``; an int index uses ``index``)."""

    def __init__(self, cache, keys: Sequence[str], train: bool = True, size: Tuple[int, int] = (192, 256)):
        entries = {e["key"]: e for e in _labels().iter_cache(cache)}
        missing = [k for k in keys if k not in entries]
        if missing:
            raise KeyError("%d keys not in the cache, e.g. %r" % (len(missing), missing[0]))
        self.cache, self.entries, self.train = cache, [entries[k] for k in keys], train
        self.size = (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, item)
        rgb, label = _labels().load_item(self.cache, self.entries[index])
        label = np.asarray(label, dtype=np.float32)
        h, w = label.shape
        img = _resize(np.asarray(rgb), h, w).astype(np.float32) * (1.0 / 255.0)
        out_h, out_w = self.size
        aspect = out_w / float(out_h)
        if self.train:
            rng = np.random.default_rng(seed)
            top, left, ch, cw = _crop_box(h, w, aspect * math.exp(rng.uniform(-0.1, 0.1)),
                                          rng.uniform(0.5, 1.0), rng)
            flip = rng.random() < 0.5
        else:
            (top, left, ch, cw), flip = _crop_box(h, w, aspect), False
        img, label = img[top:top + ch, left:left + cw], label[top:top + ch, left:left + cw]
        if self.train:
            img = _colour_jitter(img, rng)
        if flip:
            img, label = img[:, ::-1], label[:, ::-1]
        img = (_resize(np.ascontiguousarray(img), out_h, out_w) - IMAGENET_MEAN) / IMAGENET_STD
        label = _resize(np.ascontiguousarray(label), out_h, out_w)
        mask = np.isfinite(label)
        return (torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)),
                torch.from_numpy(np.where(mask, label, 0).astype(np.float32)), torch.from_numpy(mask))


class _StepSampler(torch.utils.data.Sampler):
    """``(index, augmentation seed)`` for steps ``start..steps-1``: step ``s`` takes positions
    ``s*B .. (s+1)*B-1`` of the concatenated epoch permutations of a DistributedSampler."""

    def __init__(self, base, batch_size: int, start: int, steps: int, seed: int, rank: int):
        self.base, self.batch_size, self.start, self.steps = base, batch_size, start, steps
        self.seed, self.rank = seed, rank

    def __len__(self) -> int:
        return max(0, self.steps - self.start) * self.batch_size

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        n, epoch, order = len(self.base), -1, []
        for pos in range(self.start * self.batch_size, self.steps * self.batch_size):
            if pos // n != epoch:
                epoch = pos // n
                self.base.set_epoch(epoch)
                order = list(self.base)
            step, slot = divmod(pos, self.batch_size)
            aug = int(np.random.SeedSequence([self.seed, step, self.rank, slot]).generate_state(1)[0])
            yield order[pos % n], aug


# ----------------------------------------------------------------------------------- checkpoints
def _flatten(obj: Any, tensors: Dict[str, Tensor], prefix: str) -> Any:
    """JSON structure of a state dict; its tensors go to ``tensors`` (referenced by key)."""
    if isinstance(obj, Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__items__": [[k, _flatten(v, tensors, "%s.%s" % (prefix, k))] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, tensors, "%s.%d" % (prefix, i)) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError("cannot store %s at %s without pickle" % (type(obj).__name__, prefix))


def _unflatten(obj: Any, tensors: Dict[str, Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
    return obj


def save_checkpoint(directory: str, model, optimizer, scheduler, scaler, state: Dict) -> str:
    """``model.safetensors``, ``optimizer.safetensors`` (optimizer/scheduler/scaler tensors; the
    rest as JSON in its metadata) and ``state.json``, written in a temporary folder and renamed."""
    from safetensors.torch import save_file

    from depth_estimation.io.atomic import write_folder

    tensors: Dict[str, Tensor] = {}
    structure = _flatten({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "scaler": scaler.state_dict() if scaler is not None else None}, tensors, "s")

    def fill(tmp: str) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        save_file(tensors, os.path.join(tmp, "optimizer.safetensors"),
                  metadata={"format": "pt", "structure": json.dumps(structure)})
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump(state, f, indent=1)

    return write_folder(directory, fill, overwrite=True)


def load_checkpoint(directory: str, model, optimizer, scheduler, scaler) -> Dict:
    """Restore a :func:`save_checkpoint` folder in place; returns its ``state.json``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    model.load_state_dict(load_file(os.path.join(directory, "model.safetensors")), strict=True)
    path = os.path.join(directory, "optimizer.safetensors")
    with safe_open(path, framework="pt") as f:
        structure = json.loads(f.metadata()["structure"])
    states = _unflatten(structure, load_file(path))
    optimizer.load_state_dict(states["optimizer"])
    scheduler.load_state_dict(states["scheduler"])
    if scaler is not None and states["scaler"] is not None:
        scaler.load_state_dict(states["scaler"])
    with open(os.path.join(directory, "state.json")) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------- train
def _colorize(values: np.ndarray) -> np.ndarray:
    from depth_estimation.framepath.colorize import Colorizer

    return cv2.cvtColor(Colorizer()(values), cv2.COLOR_BGR2RGB)


def _preview(x: Tensor, y: Tensor, pred: Tensor) -> np.ndarray:
    """Rows of input | teacher | student (RGB uint8 HxWx3)."""
    rows = []
    for i in range(x.shape[0]):
        rgb = x[i].permute(1, 2, 0).cpu().numpy() * IMAGENET_STD + IMAGENET_MEAN
        rows.append(np.concatenate([np.clip(rgb * 255, 0, 255).astype(np.uint8), _colorize(y[i].cpu().numpy()),
                                    _colorize(pred[i].float().cpu().numpy())], axis=1))
    return np.concatenate(rows, axis=0)


def _distributed() -> Tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def train(cache, out: str, steps: int = 1000, batch_size: int = 16, lr: float = 1e-3,
          weight_decay: float = 1e-4, schedule: str = "onecycle", size: Tuple[int, int] = (192, 256),
          val_fraction: float = 0.05, val_every: int = 100, ckpt_every: int = 100, seed: int = 0,
          workers: int = 0, resume: bool = False, log_dir: Optional[str] = None, progress: bool = True,
          alpha: float = 0.5) -> Dict:
    """Train a random-initialized student on ``cache``; write ``out/`` (see the module doc) and
    return the history {"config", "train": [...], "val": [...], "images_per_s", ...}."""
    from depth_estimation.models import fastdepth
    size = (int(size[0]), int(size[1]))
    if size[0] % 32 or size[1] % 32 or min(size) <= 0:
        raise ValueError("size %dx%d: height and width must be positive multiples of 32" % size)
    if schedule not in SCHEDULES:
        raise ValueError("schedule %r: use one of %s" % (schedule, ", ".join(SCHEDULES)))
    if min(steps, batch_size, val_every, ckpt_every) < 1 or not 0 <= val_fraction < 1:
        raise ValueError("need steps, batch_size, val_every, ckpt_every >= 1 and 0 <= val_fraction < 1")
    world, rank, local_rank = _distributed()
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    config = {"cache": str(cache), "steps": steps, "batch_size": batch_size, "lr": lr,
              "weight_decay": weight_decay, "schedule": schedule, "size": list(size), "alpha": alpha,
              "val_fraction": val_fraction, "val_every": val_every, "ckpt_every": ckpt_every, "seed": seed,
              "world_size": world}
    ckpt_dir = os.path.join(out, CHECKPOINT)
    if os.path.isdir(ckpt_dir) and not resume:
        raise FileExistsError("%s holds a checkpoint: pass --resume to continue it or choose another --out"
                              % out)

    keys = [e["key"] for e in _labels().iter_cache(cache)]
    if not keys:
        raise ValueError("no labelled images in %s; run 'depth-distill label' first" % cache)
    train_keys, val_keys = split_keys(keys, val_fraction)
    train_set = DistillDataset(cache, train_keys, train=True, size=size)
    val_set = DistillDataset(cache, val_keys, train=False, size=size) if val_keys else None
    preview_set = val_set or DistillDataset(cache, train_keys[:4], train=False, size=size)

    model = fastdepth.random_student(seed).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    amp = device.type == "cuda"
    scaler = (torch.amp.GradScaler("cuda") if hasattr(torch.amp, "GradScaler")
              else torch.cuda.amp.GradScaler()) if amp else None
    history: Dict[str, Any] = {"config": config, "train": [], "val": []}
    start = 0
    if resume and os.path.isdir(ckpt_dir):
        state = load_checkpoint(ckpt_dir, model, optimizer, scheduler, scaler)
        changed = [k for k in RESUME_KEYS if state["config"].get(k) != config[k]]
        if changed:
            raise ValueError("--resume with different settings than the checkpoint: %s" % ", ".join(
                "%s %r -> %r" % (k, state["config"].get(k), config[k]) for k in changed))
        start, history = int(state["step"]), state["history"]
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if amp else None)

    base = torch.utils.data.distributed.DistributedSampler(train_set, num_replicas=world, rank=rank,
                                                           shuffle=True, seed=seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch_size, sampler=_StepSampler(base, batch_size, start, steps, seed, rank),
        num_workers=workers, pin_memory=amp, drop_last=True)
    writer = None
    if rank == 0:
        os.makedirs(out, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(log_dir or os.path.join(out, "tb"), purge_step=start + 1 if start else None)
        except ImportError:
            print("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)", file=sys.stderr)

    def reduce_mean(values: List[float]) -> List[float]:
        t = torch.tensor(values, dtype=torch.float64, device=device)
        if world > 1:
            torch.distributed.all_reduce(t)
            t /= world
        return t.tolist()

    def validate(step: int) -> None:
        model.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=device)
        with torch.no_grad():
            if val_set is not None:
                sampler = torch.utils.data.distributed.DistributedSampler(val_set, world, rank, shuffle=False)
                batches = torch.utils.data.DataLoader(val_set, batch_size, sampler=sampler, num_workers=workers)
                for x, y, m in batches:
                    x, y, m = x.to(device), y.to(device), m.to(device)
                    with torch.autocast(device.type, enabled=amp):
                        pred = model(x)
                    loss, parts = distill_loss(pred, y, m, alpha)
                    sums += torch.stack([loss.detach(), parts["ssi"], parts["grad"],
                                         torch.ones((), device=device)]).double() * len(x)
                if world > 1:
                    torch.distributed.all_reduce(sums)
                entry = dict(zip(("loss", "ssi", "grad"), (sums[:3] / sums[3]).tolist()), step=step)
                history["val"].append(entry)
                if writer is not None:
                    for k in ("loss", "ssi", "grad"):
                        writer.add_scalar("val/" + k, entry[k], step)
            if writer is not None:
                x, y, _ = (torch.stack(t) for t in zip(*[preview_set[i] for i in range(min(4, len(preview_set)))]))
                with torch.autocast(device.type, enabled=amp):
                    pred = model(x.to(device))
                writer.add_image("preview/input_teacher_student", _preview(x, y, pred), step, dataformats="HWC")
        model.train()

    def checkpoint(step: int) -> None:
        if rank == 0:
            save_checkpoint(ckpt_dir, model, optimizer, scheduler, scaler,
                            {"step": step, "config": config, "history": history})

    bar = None
    if progress and rank == 0:
        from tqdm import tqdm
        bar = tqdm(total=steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    busy, images = 0.0, 0
    tic = time.perf_counter()
    for step, (x, y, m) in enumerate(loader, start + 1):
        x, y, m = x.to(device, non_blocking=True), y.to(device, non_blocking=True), m.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp):
            pred = net(x)
        loss, parts = distill_loss(pred, y, m, alpha)
        optimizer.zero_grad(set_to_none=True)
        current_lr = optimizer.param_groups[0]["lr"]
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        values = reduce_mean([loss.item(), parts["ssi"].item(), parts["grad"].item()])
        busy += time.perf_counter() - tic
        images += len(x) * world
        entry = dict(zip(("loss", "ssi", "grad"), values), step=step, lr=current_lr)
        history["train"].append(entry)
        if writer is not None:
            for k in ("loss", "ssi", "grad", "lr"):
                writer.add_scalar("train/" + k, entry[k], step)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss="%.4f" % entry["loss"], img_s="%.1f" % (images / max(busy, 1e-9)))
        if step % val_every == 0 or step == steps:
            validate(step)
        if step % ckpt_every == 0 or step == steps:
            checkpoint(step)
        tic = time.perf_counter()
    if bar is not None:
        bar.close()
    history["images_per_s"] = images / busy if busy else None
    history["steps"] = steps
    if rank == 0:
        from depth_estimation.io.atomic import write_json

        fastdepth.save_student(model, os.path.join(out, "student"), overwrite=True)
        write_json(os.path.join(out, "history.json"), history)
        if writer is not None:
            writer.close()
    if world > 1:
        torch.distributed.barrier()
    return history


# ----------------------------------------------------------------------------------------- CLI
def _size(text: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("size %r: use HxW, e.g. 192x256" % text)
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError("size %r: height and width must be positive multiples of 32" % text)
    return h, w


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--cache", required=True, help="label cache written by 'depth-distill label'")
    parser.add_argument("--out", required=True, help="run folder: student/, checkpoint/, history.json, tb/")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step and process (default 16)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW; default 1e-3)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="onecycle", help="learning-rate schedule")
    parser.add_argument("--size", type=_size, default=(192, 256), help="training input HxW (default 192x256)")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="share of images for validation")
    parser.add_argument("--val-every", type=int, default=100, help="validate every N steps (default 100)")
    parser.add_argument("--ckpt-every", type=int, default=100, help="checkpoint every N steps (default 100)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint")
    parser.add_argument("--log-dir", default=None, help="TensorBoard folder (default <out>/tb)")
    parser.add_argument("--seed", type=int, default=0, help="initialization, data order and augmentation seed")
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes (default 0)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def run_train(args: argparse.Namespace) -> int:
    try:
        history = train(args.cache, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                        weight_decay=args.weight_decay, schedule=args.schedule, size=args.size,
                        val_fraction=args.val_fraction, val_every=args.val_every, ckpt_every=args.ckpt_every,
                        seed=args.seed, workers=args.workers, resume=args.resume, log_dir=args.log_dir,
                        progress=args.progress)
    except (ValueError, FileExistsError, FileNotFoundError, KeyError) as exc:
        print("depth-distill train: error: %s" % exc, file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        last = history["train"][-1] if history["train"] else {}
        val = history["val"][-1]["loss"] if history["val"] else float("nan")
        print("student: %s (train loss %.4f, val loss %.4f, %.1f images/s)"
              % (os.path.join(args.out, "student"), last.get("loss", float("nan")), val,
                 history["images_per_s"] or float("nan")))
    return 0
