"""``depth-distill train``: fit the FastDepth student (``fastdepth-mnv3``) to cached labels.

    depth-distill train --cache cache/ --out runs/s1 --steps 20000 --batch-size 16
    depth-distill train --cache cache/real cache/sim --out runs/mix   # several caches: a mix
    torchrun --nproc_per_node 4 -m depth_estimation.distill train --cache cache/ --out runs/s1
    tensorboard --logdir runs/s1/tb

Loss: MiDaS scale-and-shift-invariant ``ssi + alpha * grad`` on relative inverse depth
(:mod:`depth_estimation.distill.losses`), whatever the labels' source: a teacher's output or the
inverse of RGB-D ground truth (its missing pixels masked), so the ground-plane alignment makes
the student metric like any other model. Data: the label caches, augmented, split by a hash of
the cache key (:mod:`depth_estimation.distill.data`).

Data order and augmentation depend only on ``seed`` and the step, so ``--resume`` (same settings
and number of processes) continues exactly like an uninterrupted run. Under ``torchrun``
(WORLD_SIZE/RANK/LOCAL_RANK set) the model is wrapped in DistributedDataParallel (NCCL on CUDA,
gloo on CPU), ``--batch-size`` is per process and only rank 0 writes. Mixed precision (autocast +
GradScaler) is used on CUDA only.

Output in ``--out``: ``student/`` (load with ``model:=<out>/student``), ``history.json``,
``checkpoint/`` (``model.safetensors``, ``optimizer.safetensors`` + ``state.json``; no pickle:
:mod:`depth_estimation.distill.checkpoints`) and TensorBoard events in ``tb/`` (or ``--log-dir``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from depth_estimation import options
from depth_estimation.distill.checkpoints import load_checkpoint, save_checkpoint
from depth_estimation.distill.data import DistillDataset, StepSampler, cache_keys, caches, split_keys
from depth_estimation.distill.losses import SSI_LOSSES, check_ssi, distill_loss
from depth_estimation.framepath.colorize import Colorizer
from depth_estimation.io.atomic import output_problem, write_json
from depth_estimation.models import fastdepth
from depth_estimation.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD

CHECKPOINT = "checkpoint"
SCHEDULES = ("onecycle", "cosine")
RESUME_KEYS = ("init", "steps", "batch_size", "lr", "weight_decay", "schedule", "size", "alpha",
               "val_fraction", "seed", "obstacle_weight", "ssi")
LOSS_KEYS = ("loss", "ssi", "grad")


def _colorize(values: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(Colorizer()(values), cv2.COLOR_BGR2RGB)


def _preview_rows(x: Tensor, y: Tensor, pred: Tensor) -> np.ndarray:
    """Rows of input | teacher | student (RGB uint8 HxWx3)."""
    rows = []
    for i in range(x.shape[0]):
        rgb = x[i].permute(1, 2, 0).cpu().numpy() * IMAGENET_STD + IMAGENET_MEAN
        rows.append(np.concatenate([np.clip(rgb * 255, 0, 255).astype(np.uint8),
                                    _colorize(y[i].cpu().numpy()),
                                    _colorize(pred[i].float().cpu().numpy())], axis=1))
    return np.concatenate(rows, axis=0)


def has_pillow() -> bool:
    """TensorBoard's add_image needs Pillow; without it the previews are left out (not the run)."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


def _distributed() -> Tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _check_settings(size: Tuple[int, int], schedule: str, steps: int, batch_size: int, val_every: int,
                    ckpt_every: int, val_fraction: float) -> None:
    if size[0] % 32 or size[1] % 32 or min(size) <= 0:
        raise ValueError("size %dx%d: height and width must be positive multiples of 32" % size)
    if schedule not in SCHEDULES:
        raise ValueError("schedule %r: use one of %s" % (schedule, ", ".join(SCHEDULES)))
    if min(steps, batch_size, val_every, ckpt_every) < 1 or not 0 <= val_fraction < 1:
        raise ValueError("need steps, batch_size, val_every, ckpt_every >= 1 and 0 <= val_fraction < 1")


class Trainer:
    """One run of :func:`train`: the data, the model and its optimizer, the logs, and the loop.

    ``settings`` is the run's configuration as :func:`train` records it (``world_size`` is added
    here, once the process group is known)."""

    def __init__(self, cache, out: str, settings: Dict[str, Any], workers: int = 0, resume: bool = False,
                 log_dir: Optional[str] = None):
        self.world, self.rank, local_rank = _distributed()
        self.device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.out, self.workers = out, workers
        self.config = dict(settings, world_size=self.world)
        self.ckpt_dir = os.path.join(out, CHECKPOINT)
        if os.path.isdir(self.ckpt_dir) and not resume:
            raise FileExistsError("%s holds a checkpoint: pass --resume to continue it or choose another "
                                  "--out" % out)
        self._load_data(cache)
        self._build_model()
        self.history: Dict[str, Any] = {"config": self.config, "train": [], "val": []}
        self.start = self._resume() if resume and os.path.isdir(self.ckpt_dir) else 0
        self.net = self.model
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[local_rank] if self.amp else None)
        self.loader = self._train_loader()
        self.writer = self._summary_writer(log_dir) if self.rank == 0 else None

    # ------------------------------------------------------------------------------- set-up
    def _load_data(self, cache) -> None:
        keys = cache_keys(cache)
        if not keys:
            raise ValueError("no labelled images in %s; run 'depth-distill label' first"
                             % ", ".join(caches(cache)))
        size = tuple(self.config["size"])
        train_keys, val_keys = split_keys(keys, self.config["val_fraction"])
        self.train_set = DistillDataset(cache, train_keys, train=True, size=size,
                                        obstacle_weight=self.config["obstacle_weight"])
        self.val_set = DistillDataset(cache, val_keys, train=False, size=size) if val_keys else None
        self.preview_set = self.val_set or DistillDataset(cache, train_keys[:4], train=False, size=size)

    def _build_model(self) -> None:
        c = self.config
        if c.get("init"):  # fine-tune: start from a student folder's weights (safetensors, no pickle)
            self.model = fastdepth.load_student(c["init"]).to(self.device).train()
        else:
            self.model = fastdepth.random_student(c["seed"]).to(self.device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=c["lr"],
                                           weight_decay=c["weight_decay"])
        if c["schedule"] == "onecycle":
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=c["lr"],
                                                                 total_steps=c["steps"])
        else:
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=c["steps"])
        self.amp = self.device.type == "cuda"
        self.scaler = None
        if self.amp:
            self.scaler = (torch.amp.GradScaler("cuda") if hasattr(torch.amp, "GradScaler")
                           else torch.cuda.amp.GradScaler())

    def _resume(self) -> int:
        """Restore the checkpoint; returns its step (the history continues from it)."""
        state = load_checkpoint(self.ckpt_dir, self.model, self.optimizer, self.scheduler, self.scaler)
        before = dict({"obstacle_weight": 1.0, "ssi": "mse"}, **state["config"])  # from before the options
        changed = [k for k in RESUME_KEYS if before.get(k) != self.config[k]]
        if changed:
            raise ValueError("--resume with different settings than the checkpoint: %s" % ", ".join(
                "%s %r -> %r" % (k, state["config"].get(k), self.config[k]) for k in changed))
        self.history = state["history"]
        return int(state["step"])

    def _train_loader(self) -> DataLoader:
        c = self.config
        base = DistributedSampler(self.train_set, num_replicas=self.world, rank=self.rank, shuffle=True,
                                  seed=c["seed"])
        sampler = StepSampler(base, c["batch_size"], self.start, c["steps"], c["seed"], self.rank)
        return DataLoader(self.train_set, batch_size=c["batch_size"], sampler=sampler,
                          num_workers=self.workers, pin_memory=self.amp, drop_last=True)

    def _summary_writer(self, log_dir: Optional[str]):
        os.makedirs(self.out, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package
            writer = SummaryWriter(log_dir or os.path.join(self.out, "tb"),
                                   purge_step=self.start + 1 if self.start else None)
            if not has_pillow():
                print("Pillow is not installed: no TensorBoard preview images (pip install pillow)",
                      file=sys.stderr)
            return writer
        except ImportError:
            print("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)",
                  file=sys.stderr)
            return None

    # ------------------------------------------------------------------------------- the loop
    def run(self, progress: bool = True) -> Dict:
        """Train steps ``start+1 .. steps``; write the student and ``history.json``; return the history."""
        c = self.config
        bar = None
        if progress and self.rank == 0:
            bar = tqdm(total=c["steps"], initial=self.start, desc="train", unit="step", dynamic_ncols=True)
        busy, images = 0.0, 0
        tic = time.perf_counter()
        for step, (x, y, m) in enumerate(self.loader, self.start + 1):
            values, lr = self.train_step(x, y, m)
            busy += time.perf_counter() - tic
            images += len(x) * self.world
            self._log_train(dict(zip(LOSS_KEYS, values), step=step, lr=lr), bar, images / max(busy, 1e-9))
            if step % c["val_every"] == 0 or step == c["steps"]:
                self.validate(step)
            if step % c["ckpt_every"] == 0 or step == c["steps"]:
                self.checkpoint(step)
            tic = time.perf_counter()
        if bar is not None:
            bar.close()
        self.history["images_per_s"] = images / busy if busy else None
        self.history["steps"] = c["steps"]
        self.finish()
        return self.history

    def train_step(self, x: Tensor, y: Tensor, m: Tensor) -> Tuple[List[float], float]:
        """One optimizer step; returns (loss, ssi, grad averaged over the processes, the step's lr)."""
        x, y, m = (t.to(self.device, non_blocking=True) for t in (x, y, m))
        with torch.autocast(self.device.type, enabled=self.amp):
            pred = self.net(x)
        loss, parts = distill_loss(pred, y, m, self.config["alpha"], ssi=self.config["ssi"])
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()
        return self.reduce_mean([loss.item(), parts["ssi"].item(), parts["grad"].item()]), lr

    def reduce_mean(self, values: List[float]) -> List[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(t)
            t /= self.world
        return t.tolist()

    def _log_train(self, entry: Dict[str, Any], bar, images_per_s: float) -> None:
        self.history["train"].append(entry)
        if self.writer is not None:
            for k in LOSS_KEYS + ("lr",):
                self.writer.add_scalar("train/" + k, entry[k], entry["step"])
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss="%.4f" % entry["loss"], img_s="%.1f" % images_per_s)

    def validate(self, step: int) -> None:
        """The validation losses (all processes) and, on rank 0, a preview image."""
        self.model.eval()
        with torch.no_grad():
            if self.val_set is not None:
                self._validation_losses(step)
            if self.writer is not None and has_pillow():
                self._log_preview(step)
        self.model.train()

    def _validation_losses(self, step: int) -> None:
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        sampler = DistributedSampler(self.val_set, self.world, self.rank, shuffle=False)
        batches = DataLoader(self.val_set, self.config["batch_size"], sampler=sampler,
                             num_workers=self.workers)
        for x, y, m in batches:
            x, y, m = x.to(self.device), y.to(self.device), m.to(self.device)
            with torch.autocast(self.device.type, enabled=self.amp):
                pred = self.model(x)
            loss, parts = distill_loss(pred, y, m, self.config["alpha"])
            sums += torch.stack([loss.detach(), parts["ssi"], parts["grad"],
                                 torch.ones((), device=self.device)]).double() * len(x)
        if self.world > 1:
            torch.distributed.all_reduce(sums)
        entry = dict(zip(LOSS_KEYS, (sums[:3] / sums[3]).tolist()), step=step)
        self.history["val"].append(entry)
        if self.writer is not None:
            for k in LOSS_KEYS:
                self.writer.add_scalar("val/" + k, entry[k], step)

    def _log_preview(self, step: int) -> None:
        items = [self.preview_set[i] for i in range(min(4, len(self.preview_set)))]
        x, y, _ = (torch.stack(t) for t in zip(*items))
        with torch.autocast(self.device.type, enabled=self.amp):
            pred = self.model(x.to(self.device))
        self.writer.add_image("preview/input_teacher_student", _preview_rows(x, y, pred), step,
                              dataformats="HWC")

    def checkpoint(self, step: int) -> None:
        if self.rank == 0:
            save_checkpoint(self.ckpt_dir, self.model, self.optimizer, self.scheduler, self.scaler,
                            {"step": step, "config": self.config, "history": self.history})

    def finish(self) -> None:
        """Rank 0 writes the student and ``history.json``; all processes wait for it."""
        if self.rank == 0:
            fastdepth.save_student(self.model, os.path.join(self.out, "student"), overwrite=True)
            write_json(os.path.join(self.out, "history.json"), self.history)
            if self.writer is not None:
                self.writer.close()
        if self.world > 1:
            torch.distributed.barrier()


def train(cache, out: str, steps: int = 1000, batch_size: int = 16, lr: float = 1e-3,
          weight_decay: float = 1e-4, schedule: str = "onecycle", size: Tuple[int, int] = (192, 256),
          val_fraction: float = 0.05, val_every: int = 100, ckpt_every: int = 100, seed: int = 0,
          workers: int = 0, resume: bool = False, log_dir: Optional[str] = None, progress: bool = True,
          alpha: float = 0.5, init: Optional[str] = None, obstacle_weight: float = 1.0,
          ssi: str = "mse") -> Dict:
    """Train a student on ``cache`` (a folder or several), random-initialized or from the student
    folder ``init`` (fine-tuning, e.g. the shipped ``fastdepth-duckietown``); write ``out/`` (see
    the module doc) and return the history {"config", "train": [...], "val": [...], "images_per_s", ...}.
    ``obstacle_weight``: the training loss weighs the obstacle pixels of ground-truth items that have
    an obstacle mask this many times (:mod:`depth_estimation.distill.data`); ``ssi``: the training
    loss's residual norm, "mse" or "mae" (:func:`~depth_estimation.distill.losses.distill_loss`).
    Validation stays unweighted and on "mse", comparable across runs."""
    size = (int(size[0]), int(size[1]))
    _check_settings(size, schedule, steps, batch_size, val_every, ckpt_every, val_fraction)
    check_ssi(ssi)  # before the caches load
    settings = {"cache": caches(cache), "steps": steps, "batch_size": batch_size, "lr": lr,
                "weight_decay": weight_decay, "schedule": schedule, "size": list(size), "alpha": alpha,
                "val_fraction": val_fraction, "val_every": val_every, "ckpt_every": ckpt_every, "seed": seed,
                "init": os.path.abspath(init) if init else None, "obstacle_weight": float(obstacle_weight),
                "ssi": ssi}
    trainer = Trainer(cache, out, settings, workers=workers, resume=resume, log_dir=log_dir)
    return trainer.run(progress=progress)


# ----------------------------------------------------------------------------------------- CLI
def parse_size(text: str) -> Tuple[int, int]:
    """``--size HxW``: positive multiples of 32."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("size %r: use HxW, e.g. 192x256" % text)
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError("size %r: height and width must be positive multiples of 32" % text)
    return h, w


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add = parser.add_argument
    add("--cache", required=True, nargs="+", help="label cache(s) written by 'depth-distill label' "
        "(several: trained on all of them, e.g. teacher labels and ground truth)")
    add("--out", required=True, help="run folder: student/, checkpoint/, history.json, tb/")
    add("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    add("--batch-size", type=int, default=16, help="images per step and process (default 16)")
    add("--lr", type=float, default=1e-3, help="peak learning rate (AdamW; default 1e-3)")
    add("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    add("--schedule", choices=SCHEDULES, default="onecycle", help="learning-rate schedule")
    add("--size", type=parse_size, default=(192, 256), help="training input HxW (default 192x256)")
    add("--val-fraction", type=float, default=0.05, help="share of images for validation")
    add("--val-every", type=int, default=100, help="validate every N steps (default 100)")
    add("--ckpt-every", type=int, default=100, help="checkpoint every N steps (default 100)")
    add("--resume", action="store_true", help="continue from <out>/checkpoint")
    add("--init", default=None, metavar="STUDENT", help="start from this student folder's weights "
        "(fine-tuning, e.g. assets/models/fastdepth-duckietown or <run>/student) instead of random ones")
    add("--obstacle-weight", type=float, default=1.0, metavar="K",
        help="weigh obstacle pixels K times in the training loss (ground truth of depth-sim2bag bags, "
             "whose obstacle masks 'depth-distill label' caches; default 1: like every other pixel)")
    add("--ssi", choices=SSI_LOSSES, default="mse",
        help="the scale-and-shift-invariant term's residual: mse (squared, default) or mae (absolute, "
             "after MiDaS; see the README's trials); validation is always reported on mse")
    add("--log-dir", default=None, help="TensorBoard folder (default <out>/tb)")
    add("--seed", type=int, default=0, help="initialization, data order and augmentation seed")
    add("--workers", type=int, default=0, help="data loader worker processes (default 0)")
    options.add_progress(parser)
    return parser


def run_train(args: argparse.Namespace) -> int:
    problem = output_problem(args.out, folder=True)
    if problem:  # before the caches load and hours of training start
        print("depth-distill train: error: %s" % problem, file=sys.stderr)
        return 2
    try:
        history = train(args.cache, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                        weight_decay=args.weight_decay, schedule=args.schedule, size=args.size,
                        val_fraction=args.val_fraction, val_every=args.val_every, ckpt_every=args.ckpt_every,
                        seed=args.seed, workers=args.workers, resume=args.resume, log_dir=args.log_dir,
                        progress=args.progress, init=args.init, obstacle_weight=args.obstacle_weight,
                        ssi=args.ssi)
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
