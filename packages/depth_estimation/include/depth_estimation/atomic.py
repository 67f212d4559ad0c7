"""Atomic writes: result files and model folders appear whole or not at all."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional


@contextmanager
def atomic_file(path: str, mode: str = "w", newline: Optional[str] = None) -> Iterator[Any]:
    """Write ``path`` through ``path.partial``, renamed into place only when the block succeeds."""
    tmp = path + ".partial"
    try:
        with open(tmp, mode, newline=newline) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, data: Any) -> None:
    with atomic_file(path) as f:
        json.dump(data, f, indent=2)


def write_folder(directory: str, fill: Callable[[str], None], overwrite: bool = False) -> str:
    """Build a folder with ``fill(tmp)`` in a temporary folder beside ``directory`` and rename it into
    place: readers see the old folder or the new one, never half of one. An existing non-empty
    folder is replaced only with ``overwrite``."""
    directory = os.path.abspath(os.path.expanduser(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError("%s exists and is not a directory" % directory)
    if os.path.isdir(directory) and os.listdir(directory) and not overwrite:
        raise FileExistsError("%s exists and is not empty; pass overwrite=True (--force) to replace it" % directory)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".%s.tmp-" % os.path.basename(directory), dir=parent)
    try:
        fill(tmp)
        umask = os.umask(0o22)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp and safetensors make owner-only files; readable like others
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), 0o666 & ~umask)
        old = None
        if os.path.exists(directory):
            old = tempfile.mkdtemp(prefix=".%s.old-" % os.path.basename(directory), dir=parent)
            os.rename(directory, os.path.join(old, "d"))
        os.rename(tmp, directory)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def write_model_folder(directory: str, tensors: Dict[str, Any], weights_name: str, json_name: str,
                       info: Dict[str, Any], metadata: Optional[Dict[str, str]] = None,
                       overwrite: bool = False, json_default=None) -> str:
    """A folder of ``weights_name`` (safetensors) + ``json_name``, written with :func:`write_folder`."""
    from safetensors.torch import save_file

    def fill(tmp: str) -> None:
        save_file(tensors, os.path.join(tmp, weights_name), metadata=metadata or {"format": "pt"})
        with open(os.path.join(tmp, json_name), "w") as f:
            json.dump(info, f, indent=1, default=json_default)

    return write_folder(directory, fill, overwrite)
