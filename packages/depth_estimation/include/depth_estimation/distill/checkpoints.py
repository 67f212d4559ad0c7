"""Training checkpoints without pickle: a folder of ``model.safetensors``, ``optimizer.safetensors``
(the optimizer, scheduler and GradScaler tensors; the rest of their state as JSON in its metadata)
and ``state.json``, written whole or not at all (:func:`depth_estimation.io.atomic.write_folder`).
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Dict

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from depth_estimation.io.atomic import write_folder


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


def _fill(tmp: str, weights: Dict[str, Tensor], tensors: Dict[str, Tensor], structure: Any,
          state: Dict) -> None:
    """The checkpoint files, written into the temporary folder ``tmp``."""
    save_file(weights, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    save_file(tensors, os.path.join(tmp, "optimizer.safetensors"),
              metadata={"format": "pt", "structure": json.dumps(structure)})
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(state, f, indent=1)


def save_checkpoint(directory: str, model, optimizer, scheduler, scaler, state: Dict) -> str:
    """``model.safetensors``, ``optimizer.safetensors`` (optimizer/scheduler/scaler tensors; the
    rest as JSON in its metadata) and ``state.json``, written in a temporary folder and renamed."""
    tensors: Dict[str, Tensor] = {}
    structure = _flatten({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "scaler": scaler.state_dict() if scaler is not None else None}, tensors, "s")
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fill = functools.partial(_fill, weights=weights, tensors=tensors, structure=structure, state=state)
    return write_folder(directory, fill, overwrite=True)


def load_checkpoint(directory: str, model, optimizer, scheduler, scaler) -> Dict:
    """Restore a :func:`save_checkpoint` folder in place; returns its ``state.json``."""
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
