"""The student's training data: the label cache as an augmented dataset, its split and sampler.

The image is resized to its label's size; for training a random crop (0.5-1 of the largest crop
with the training aspect ``W/H`` times a +-10 % jitter), a horizontal flip and a colour jitter
(brightness, contrast, saturation +-20 %, image only), then a resize to the training size and the
ImageNet normalization. Validation: a centre crop to the training aspect (the whole image when
the aspect already matches) and a plain resize. Labels are resized over their valid pixels
(:func:`.label_cache.resize_label`). The mask is "label finite": the teacher's zeros (the sky,
far away) are valid targets, the NaN of ground-truth labels (no measurement) are not. With
``obstacle_weight`` K != 1 the mask becomes a float weight: 0 where masked, else 1 + (K - 1) times
the item's obstacle share (:func:`.label_cache.load_obstacles`, cropped and flipped with the label;
0 for items without one), so the loss weighs obstacle pixels K times. The split is by a hash of
the cache key (stable across runs).

Data order and augmentation depend only on the seed and the step (the DistributedSampler's
epoch permutations, an RNG seeded by seed/step/rank/slot: :class:`StepSampler`), so a resumed
run continues exactly like an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import math
from typing import Iterator, List, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from depth_estimation.distill import label_cache
from depth_estimation.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD


def caches(cache: Union[str, Sequence[str]]) -> List[str]:
    """One cache folder or several (a mix, e.g. teacher labels of real frames and ground truth of
    simulated ones) as a list."""
    return [cache] if isinstance(cache, str) else [str(c) for c in cache]


def cache_keys(cache: Union[str, Sequence[str]]) -> List[str]:
    """The keys of the labelled items of ``cache`` (one folder or several), in index order, each once."""
    return list(dict.fromkeys(entry["key"] for c in caches(cache) for entry in label_cache.iter_cache(c)))


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
    """Items of the label cache (one folder or several: every cache holding a key gives an item)
    as (x float32 [3,H,W] normalized, y float32 [H,W] inverse depth, 0 where masked, mask bool
    [H,W] = label finite; float32 weights with ``obstacle_weight`` != 1, see the module docstring).
    Index with an int (no augmentation) or, for training, with ``(index, seed)`` (augmentation
    drawn from ``seed``; an int index uses ``index``)."""

    def __init__(self, cache, keys: Sequence[str], train: bool = True, size: Tuple[int, int] = (192, 256),
                 obstacle_weight: float = 1.0):
        if not obstacle_weight >= 1.0:
            raise ValueError("obstacle_weight %r: must be >= 1 (1 = obstacle pixels weigh as the rest)"
                             % obstacle_weight)
        self.obstacle_weight = float(obstacle_weight)
        entries = {}  # type: dict
        for c in caches(cache):
            for e in label_cache.iter_cache(c):
                entries.setdefault(e["key"], []).append((c, e))
        missing = [k for k in keys if k not in entries]
        if missing:
            raise KeyError("%d keys not in the cache, e.g. %r" % (len(missing), missing[0]))
        self.entries = [item for k in keys for item in entries[k]]
        self.train = train
        self.size = (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, item)
        rgb, label = label_cache.load_item(*self.entries[index])
        label = np.asarray(label, dtype=np.float32)
        h, w = label.shape
        share = None
        if self.obstacle_weight != 1.0:
            share = label_cache.load_obstacles(*self.entries[index])
            share = np.zeros((h, w), np.float32) if share is None else _resize(share, h, w)
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
        label = label_cache.resize_label(np.ascontiguousarray(label), out_h, out_w)
        mask = np.isfinite(label)
        if share is not None:
            share = share[top:top + ch, left:left + cw]
            share = _resize(np.ascontiguousarray(share[:, ::-1] if flip else share), out_h, out_w)
            mask = np.where(mask, 1.0 + (self.obstacle_weight - 1.0) * share, 0.0).astype(np.float32)
        return (torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)),
                torch.from_numpy(np.where(np.isfinite(label), label, 0).astype(np.float32)),
                torch.from_numpy(np.ascontiguousarray(mask)))


class StepSampler(torch.utils.data.Sampler):
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
