"""The figure of ``depth-eval --align ground --figure PNG``: camera | relative | metric, ground inliers
marked, written atomically (a matplotlib Figure of its own: no pyplot state, the process's backend left
as it is)."""
from __future__ import annotations

import io
from typing import Optional

import numpy as np

from depth_estimation.io.atomic import write_bytes


def write_ground_figure(path: str, rgb: np.ndarray, disparity: np.ndarray, depth_m: np.ndarray,
                        inliers: Optional[np.ndarray], title: str = "",
                        max_depth: Optional[float] = None) -> str:
    """Three panels: the camera frame (RGB uint8) with the ground pixels that fit the calibration's plane
    shaded green, the model's relative disparity, and the metric depth (metres, colour bar up to
    ``max_depth`` or the 99th percentile; NaN white)."""
    import matplotlib  # optional: only the figure needs it
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    axes[0].imshow(rgb)
    if inliers is not None and inliers.any():
        overlay = np.zeros(inliers.shape + (4,), np.float32)
        overlay[inliers] = (0.1, 1.0, 0.1, 0.45)
        axes[0].imshow(overlay)
    axes[0].set_title("camera, ground inliers green")
    finite = np.isfinite(disparity)
    lo, hi = (np.percentile(disparity[finite], [2, 98]) if finite.any() else (0.0, 1.0))
    axes[1].imshow(np.where(finite, disparity, np.nan), cmap="inferno", vmin=lo, vmax=hi)
    axes[1].set_title("relative disparity (model)")
    known = np.isfinite(depth_m)
    vmax = max_depth if max_depth is not None else (float(np.percentile(depth_m[known], 99)) if known.any()
                                                    else 1.0)
    cmap = matplotlib.colormaps["turbo"].with_extremes(bad="white")
    shown = axes[2].imshow(depth_m, cmap=cmap, vmin=0.0, vmax=vmax)
    axes[2].set_title("metric depth (m) from the ground plane")
    fig.colorbar(shown, ax=axes[2], fraction=0.035, pad=0.02, label="m")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    write_bytes(path, buf.getvalue())
    return path
