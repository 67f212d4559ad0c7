"""Atomic writes, the one implementation: result files and model folders appear whole or not at all.

Files go through a unique temporary name beside the target (two writers never collide), are
fsynced, then renamed into place (:func:`atomic_path`, :func:`atomic_file`, :func:`write_bytes`,
:func:`write_json`); folders are built beside the target and renamed (:func:`write_folder`).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A unique temporary path beside ``path``, not yet existing, for a writer that wants a file name
    (a bag, an ONNX export); the file is fsynced and renamed onto ``path`` only when the block
    succeeds, and removed otherwise. Two writers of the same ``path`` never share a temporary file."""
    path = os.path.abspath(os.path.expanduser(path))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".%s." % os.path.basename(path), suffix=".partial", dir=directory)
    tmp = os.path.join(scratch, os.path.basename(path))
    try:
        yield tmp
        if not os.path.isfile(tmp):
            raise FileNotFoundError("the writer of %s produced no file" % path)
        _fsync_file(tmp)
        _set_default_mode(tmp)
        os.replace(tmp, path)
        _fsync_dir(directory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def atomic_file(path: str, mode: str = "w", newline: Optional[str] = None) -> Iterator[Any]:
    """Write ``path`` through an open temporary file (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, newline=newline) as f:
            yield f


def write_bytes(path: str, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def write_json(path: str, data: Any, **dump_kwargs: Any) -> None:
    with atomic_file(path) as f:
        json.dump(data, f, **dict({"indent": 2}, **dump_kwargs))


def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform or file system; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _set_default_mode(path: str, directory: bool = False) -> None:
    """mkstemp/mkdtemp make owner-only files; results are readable like any other file."""
    umask = os.umask(0o22)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def write_folder(directory: str, fill: Callable[[str], None], overwrite: bool = False) -> str:
    """Build a folder with ``fill(tmp)`` in a temporary folder beside ``directory`` and rename it into
    place: readers see the old folder or the new one, never half of one. An existing non-empty
    folder is replaced only with ``overwrite``."""
    directory = os.path.abspath(os.path.expanduser(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError("%s exists and is not a directory" % directory)
    if os.path.isdir(directory) and os.listdir(directory) and not overwrite:
        raise FileExistsError("%s exists and is not empty; pass overwrite=True (--force) to replace it"
                              % directory)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".%s.tmp-" % os.path.basename(directory), dir=parent)
    try:
        fill(tmp)
        _set_default_mode(tmp, directory=True)
        for name in os.listdir(tmp):
            if os.path.isfile(os.path.join(tmp, name)):
                _fsync_file(os.path.join(tmp, name))
                _set_default_mode(os.path.join(tmp, name))
        old = None
        if os.path.exists(directory):
            old = tempfile.mkdtemp(prefix=".%s.old-" % os.path.basename(directory), dir=parent)
            os.rename(directory, os.path.join(old, "d"))
        os.rename(tmp, directory)
        _fsync_dir(parent)
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
    from safetensors.torch import save_file  # safetensors.torch imports torch: only for model folders

    def fill(tmp: str) -> None:
        save_file(tensors, os.path.join(tmp, weights_name), metadata=metadata or {"format": "pt"})
        with open(os.path.join(tmp, json_name), "w") as f:
            json.dump(info, f, indent=1, default=json_default)

    return write_folder(directory, fill, overwrite)


def output_problem(path: str, folder: bool = False) -> Optional[str]:
    """Why a tool could not write its output ``path`` (``folder``: an output folder), as one line, or
    None: checked before the work starts, so a long run is not lost on a read-only or missing place.
    The nearest existing folder must take a new file (a temporary one, removed at once)."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path) != folder and os.path.exists(path):
        return "cannot write %s: it exists and is %s" % (path, "not a folder" if folder else "a folder")
    existing = path if folder else os.path.dirname(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return "cannot write %s: %s is not a folder" % (path, existing)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return "cannot write %s: %s (%s)" % (path, exc.strerror or exc, existing)
    return None


def write_error(path: str, exc: OSError) -> str:
    """One line for a write that failed (disk full, permissions) naming the file and the cause."""
    return "cannot write %s: %s" % (path, exc.strerror or exc)

