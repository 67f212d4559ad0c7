"""Compressed camera frames in and out: validation before decoding, decoding, JPEG encoding.

Every way a frame can be bad raises :class:`RejectedFrame` with a short ``kind`` (used to
throttle warnings and in counters) so the caller can drop it and go on with the next one.
Sizes are read from the JPEG/PNG header before decoding, so a 10000x10000 frame is refused
without allocating it.
"""
from __future__ import annotations

import struct
from typing import Optional, Tuple

import cv2
import numpy as np

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, ...), not DHT/JPG/DAC.
_SOF_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class RejectedFrame(ValueError):
    """A frame that cannot be used; ``kind`` is one of KINDS."""

    KINDS = ("empty", "unknown_format", "corrupt", "truncated", "too_small", "too_large",
             "camera_info_size")

    def __init__(self, kind: str, detail: str):
        assert kind in self.KINDS, kind
        super().__init__("%s: %s" % (kind, detail))
        self.kind = kind
        self.detail = detail


def sniff(data: bytes) -> Optional[str]:
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    return None


def header_size(data: bytes, fmt: str) -> Tuple[int, int]:
    """(width, height) from a JPEG SOF or PNG IHDR header; RejectedFrame when unreadable."""
    if fmt == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise RejectedFrame("truncated", "PNG without IHDR header (%d bytes)" % len(data))
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise RejectedFrame("corrupt", "JPEG marker expected at byte %d" % pos)
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker in _SOF_MARKERS:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            raise RejectedFrame("corrupt", "JPEG without a frame header")
        pos += 2 + length
    raise RejectedFrame("corrupt", "no JPEG frame header in %d bytes" % len(data))


def _complete(data: bytes, fmt: str) -> bool:
    if fmt == "png":
        return b"IEND" in data[-32:]
    return data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


def decode(data: bytes, fmt_hint: str = "", min_side: int = 16, max_side: int = 4096) -> np.ndarray:
    """Validate and decode a compressed frame to a BGR uint8 image."""
    data = bytes(data)
    if not data:
        raise RejectedFrame("empty", "frame has no data")
    fmt = sniff(data)
    if fmt is None:
        raise RejectedFrame("unknown_format", "format %r, first bytes %s are neither JPEG nor PNG"
                            % (fmt_hint, data[:4].hex()))
    width, height = header_size(data, fmt)
    if min(width, height) < min_side:
        raise RejectedFrame("too_small", "%dx%d (min side %d)" % (width, height, min_side))
    if max(width, height) > max_side:
        raise RejectedFrame("too_large", "%dx%d (max side %d)" % (width, height, max_side))
    if not _complete(data, fmt):
        raise RejectedFrame("truncated", "%s of %d bytes has no end marker" % (fmt.upper(), len(data)))
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.shape[:2] != (height, width):
        raise RejectedFrame("corrupt", "%s did not decode to its %dx%d header size" % (fmt.upper(), width, height))
    return image


def encode_jpeg(bgr: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
