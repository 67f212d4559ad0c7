"""The distillation loss (MiDaS, Ranftl et al. 2020) on relative inverse depth (disparity).

Per image over the valid pixels: the target is normalized (minus its mean, divided by its mean
absolute deviation, so the loss does not depend on the teacher's units), the prediction is
aligned to it by the least-squares scale and shift (positive scale, constants for autograd: see
:func:`align`), and the loss is the mean *squared* residual (``ssi``, the quantity the
least-squares fit minimizes) plus ``alpha`` (0.5) times the multi-scale (4 scales)
gradient-matching loss on that residual (``grad``).

``ssi="mae"`` (``depth-distill train --ssi mae``) follows MiDaS's ssimae (which centres on the median;
here the mean, as for the target): the prediction is normalized like the target (mean and mean
absolute deviation over the valid pixels, differentiably) and the loss is the mean *absolute*
residual. Where the student cannot tell two depths apart (an obstacle's edge against the road behind
it) its optimum is the likelier one, the weighted median, not the mean, so with obstacle pixels
weighed up (``--obstacle-weight``) an obstacle is not pulled half-way towards the road; unweighted,
a small obstacle is the minority and loses. (The least-squares alignment with constant ``s`` and ``t``
is only right for the squared residual, which is stationary in them: with the absolute one a shared
value drifts off as the fit follows it.)

The mask is bool (valid pixels) or float weights (0 = masked): then the normalization and the
alignment still use every valid pixel alike, and both loss terms are weighted means (a pixel pair
of the gradient term weighs the mean of its two weights), so ``depth-distill train
--obstacle-weight`` makes obstacle pixels count more without moving the alignment.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor


def _normalize(values: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """Per image: minus the mean, divided by the mean absolute deviation (over ``mask``)."""
    m = mask.float()
    n = m.sum((1, 2), keepdim=True).clamp_min(1)
    t = torch.where(mask, values, torch.zeros_like(values))
    centred = t - (t * m).sum((1, 2), keepdim=True) / n
    return centred / ((centred.abs() * m).sum((1, 2), keepdim=True) / n + eps)


def align(pred: Tensor, target: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """``s * pred + t`` with the per-image least-squares scale ``s`` and shift ``t`` over ``mask``.

    Two changes to MiDaS: (1) ``s`` and ``t`` are constants for autograd. The squared residual is
    stationary in them at the least-squares fit, so its gradient is unchanged, but the gradient
    term can no longer pull ``s`` to 0 (with a differentiable fit a random student stayed
    uncorrelated with the target and ``ssi + 0.5 grad`` did not fall). (2) ``s`` is positive: when
    the fit is negative (an inverted prediction), ``s`` matches the mean absolute deviations
    instead, so the residual pushes towards the teacher's sign (near = large) rather than fitting
    an inverted student."""
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


def _per_image_mean(values: Tensor, weight: Tensor) -> Tensor:
    n = weight.sum((1, 2))
    per_image = (values * weight).sum((1, 2)) / n.clamp_min(1e-6)
    valid = (n > 0).float()
    return (per_image * valid).sum() / valid.sum().clamp_min(1)


def _gradient_matching(residual: Tensor, weight: Tensor, scales: int) -> Tensor:
    total = residual.new_zeros(())
    for k in range(scales):
        w = weight[:, ::2 ** k, ::2 ** k]
        m = (w > 0).float()
        r = residual[:, ::2 ** k, ::2 ** k] * m
        pair_x = m[:, :, 1:] * m[:, :, :-1] * (w[:, :, 1:] + w[:, :, :-1]) * 0.5  # a pair weighs its mean
        pair_y = m[:, 1:] * m[:, :-1] * (w[:, 1:] + w[:, :-1]) * 0.5
        gx = (r[:, :, 1:] - r[:, :, :-1]).abs() * pair_x
        gy = (r[:, 1:] - r[:, :-1]).abs() * pair_y
        n = w.sum((1, 2))
        per_image = (gx.sum((1, 2)) + gy.sum((1, 2))) / n.clamp_min(1e-6)
        valid = (n > 0).float()
        total = total + (per_image * valid).sum() / valid.sum().clamp_min(1)
    return total


SSI_LOSSES = ("mse", "mae")


def check_ssi(ssi: str) -> None:
    """ValueError unless ``ssi`` is one of :data:`SSI_LOSSES`."""
    if ssi not in SSI_LOSSES:
        raise ValueError("ssi %r: use one of %s" % (ssi, ", ".join(SSI_LOSSES)))


def distill_loss(pred: Tensor, target: Tensor, mask: Tensor, alpha: float = 0.5,
                 scales: int = 4, ssi: str = "mse") -> Tuple[Tensor, Dict[str, Tensor]]:
    """``ssi + alpha * grad`` (one alignment shared); returns (total, {"ssi", "grad"} detached).
    ``mask``: bool valid pixels or float weights (see the module docstring); ``ssi``: "mse" (squared
    residual) or "mae" (absolute residual)."""
    check_ssi(ssi)
    pred, target = pred.float(), target.float()
    weight = mask.float()
    mask = weight > 0
    target = _normalize(target, mask)
    if ssi == "mse":
        residual = align(pred, target, mask) - target
        per_pixel = residual ** 2
    else:  # MiDaS's ssimae: the prediction normalized like the target, differentiably
        residual = _normalize(pred, mask) - target
        per_pixel = residual.abs()
    term = _per_image_mean(per_pixel, weight)
    grad = _gradient_matching(residual, weight, scales) if alpha else term.new_zeros(())
    return term + alpha * grad, {"ssi": term.detach(), "grad": grad.detach()}
