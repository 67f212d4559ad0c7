"""Image sizes from JPEG / PNG headers, the one implementation: no pixels are decoded to learn them.

:func:`sniff` tells JPEG from PNG by their magic bytes, :func:`header_size` reads (width, height)
from the JPEG start-of-frame or PNG IHDR header and raises :class:`ImageHeaderError` when it
cannot, and :func:`image_size` gives (height, width) of any image OpenCV reads: from the header
when there is a readable one, else by decoding; :func:`exif_orientation` reads a JPEG's EXIF
orientation tag, so that :func:`image_size` with ``oriented=True`` gives the size OpenCV's
``imread`` / ``imdecode`` return by default (orientation applied). The frame path refuses a
10000x10000 frame from its header this way without allocating it; the scorers check prediction
sizes without decoding.
"""
from __future__ import annotations

import struct
from typing import Optional, Tuple

import numpy as np

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, ...), not DHT/JPG/DAC.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class ImageHeaderError(ValueError):
    """A JPEG / PNG header without a readable size; ``kind`` is ``"truncated"`` or ``"corrupt"``."""

    def __init__(self, kind: str, detail: str):
        super().__init__("%s: %s" % (kind, detail))
        self.kind = kind
        self.detail = detail


def sniff(data: bytes) -> Optional[str]:
    """``"jpeg"`` or ``"png"`` from the magic bytes, None for anything else."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    return None


def header_size(data: bytes, fmt: str) -> Tuple[int, int]:
    """(width, height) from a JPEG SOF or PNG IHDR header (``fmt`` from :func:`sniff`);
    :class:`ImageHeaderError` when the header is unreadable."""
    if fmt == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageHeaderError("truncated", "PNG without IHDR header (%d bytes)" % len(data))
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageHeaderError("corrupt", "JPEG marker expected at byte %d" % pos)
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker in SOF_MARKERS:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            raise ImageHeaderError("corrupt", "JPEG without a frame header")
        pos += 2 + length
    raise ImageHeaderError("corrupt", "no JPEG frame header in %d bytes" % len(data))


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of a JPEG, 1 when it has none or the tag is unreadable; 5-8 mean the
    image is shown turned by 90 degrees (width and height swapped)."""
    pos = 2
    while data.startswith(JPEG_MAGIC) and pos + 4 <= len(data) and data[pos] == 0xFF:
        marker, (length,) = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])
        if marker == 0xDA or marker in SOF_MARKERS:  # the tag precedes the image data
            break
        body = data[pos + 4:pos + 2 + length]
        if marker == 0xE1 and body[:6] == b"Exif\x00\x00" and body[6:8] in (b"II", b"MM"):
            tiff, order = body[6:], "<" if body[6:8] == b"II" else ">"
            try:
                (ifd,) = struct.unpack(order + "I", tiff[4:8])
                (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
                for i in range(count):
                    entry = tiff[ifd + 2 + 12 * i:ifd + 14 + 12 * i]
                    tag, kind, _n, value = struct.unpack(order + "HHIH", entry[:10])
                    if tag == 0x0112 and kind == 3:
                        return value if 1 <= value <= 8 else 1
            except struct.error:
                return 1
        pos += 2 + length
    return 1


def image_size(data: bytes, oriented: bool = False) -> Tuple[int, int]:
    """(height, width) of an encoded image: from its JPEG / PNG header, decoded when the header is
    odd or the format another one OpenCV reads; with ``oriented`` as shown (a JPEG's EXIF orientation
    applied, as by ``cv2.imread``), else as stored. ValueError when it cannot be decoded either."""
    data = bytes(data)
    fmt = sniff(data)
    if fmt is not None:
        try:
            width, height = header_size(data, fmt)
            turned = oriented and fmt == "jpeg" and exif_orientation(data) >= 5
            return (width, height) if turned else (height, width)
        except ImageHeaderError:  # odd header: decode instead
            pass
    import cv2  # heavy; only odd headers and other formats need it

    flags = cv2.IMREAD_COLOR if oriented else cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if image is None:
        raise ValueError("cannot decode an image of %d bytes (first bytes %s)" % (len(data), data[:4].hex()))
    return int(image.shape[0]), int(image.shape[1])
