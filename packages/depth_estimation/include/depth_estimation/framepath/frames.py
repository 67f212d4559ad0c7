"""Compressed camera frames in and out: validation before decoding, decoding, JPEG encoding.

Every way a frame can be bad raises :class:`RejectedFrame` with a short ``kind`` (used to
throttle warnings and in counters) so the caller can drop it and go on with the next one.
Sizes are read from the JPEG/PNG header before decoding (:mod:`depth_estimation.io.images`), so
a 10000x10000 frame is refused without allocating it. Any other failure of a frame's processing is
tagged with its stage (:func:`failing_as`, :class:`StageFailed`) and counted by it.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import cv2
import numpy as np

from depth_estimation.io.images import ImageHeaderError, header_size, sniff


class StageFailed(RuntimeError):
    """A frame's processing failed in ``stage`` (one of STAGES); ``cause`` is what was raised."""

    STAGES = ("decode", "infer", "postprocess", "colorize", "encode", "publish")

    def __init__(self, stage: str, cause: BaseException):
        assert stage in self.STAGES, stage
        super().__init__("%s: %s" % (stage, cause))
        self.stage, self.cause = stage, cause


@contextlib.contextmanager
def failing_as(stage: str) -> Iterator[None]:
    """Anything but a :class:`RejectedFrame` (bad input) or a :class:`StageFailed` raised inside
    becomes ``StageFailed(stage, exc)``: the stream counts failures by the stage that raised them."""
    try:
        yield
    except (RejectedFrame, StageFailed):
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised, tagged
        raise StageFailed(stage, exc) from exc


class RejectedFrame(ValueError):
    """A frame that cannot be used; ``kind`` is one of KINDS."""

    KINDS = ("empty", "unknown_format", "corrupt", "truncated", "too_small", "too_large", "aspect",
             "input_too_large")

    def __init__(self, kind: str, detail: str):
        assert kind in self.KINDS, kind
        super().__init__("%s: %s" % (kind, detail))
        self.kind = kind
        self.detail = detail


def _complete(data: bytes, fmt: str) -> bool:
    """Whether the image's end marker is there. A JPEG's end of image (FFD9) may be followed by
    trailing bytes (decoders ignore them); inside the scan data an FF byte is always stuffed, so an
    FFD9 after the first start of scan (FFDA) is the end marker."""
    if fmt == "png":
        return b"IEND" in data[-32:]
    scan = data.find(b"\xff\xda")
    return scan >= 0 and data.find(b"\xff\xd9", scan) >= 0


def decode(data: bytes, fmt_hint: str = "", min_side: int = 16, max_side: int = 4096,
           max_aspect: float = 4.0) -> np.ndarray:
    """Validate and decode a compressed frame to a BGR uint8 image (sizes checked from its header)."""
    data = bytes(data)
    if not data:
        raise RejectedFrame("empty", "frame has no data")
    fmt = sniff(data)
    if fmt is None:
        raise RejectedFrame("unknown_format", "format %r, first bytes %s are neither JPEG nor PNG"
                            % (fmt_hint, data[:4].hex()))
    try:
        width, height = header_size(data, fmt)
    except ImageHeaderError as exc:
        raise RejectedFrame(exc.kind, exc.detail) from None
    if min(width, height) < min_side:
        raise RejectedFrame("too_small", "%dx%d (min side %d)" % (width, height, min_side))
    if max(width, height) > max_side:
        raise RejectedFrame("too_large", "%dx%d (max side %d)" % (width, height, max_side))
    if max(width, height) > max_aspect * min(width, height):
        raise RejectedFrame("aspect", "%dx%d: the long side is over %g x the short side"
                            % (width, height, max_aspect))
    if not _complete(data, fmt):
        raise RejectedFrame("truncated", "%s of %d bytes has no end marker" % (fmt.upper(), len(data)))
    # the sensor's geometry, as camera_info describes it: OpenCV would otherwise rotate by the EXIF tag
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.shape[:2] != (height, width):
        raise RejectedFrame("corrupt", "%s did not decode to its %dx%d header size"
                            % (fmt.upper(), width, height))
    return image


def encode_jpeg(bgr: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
