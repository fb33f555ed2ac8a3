"""Before any pixel is decoded: what a decode of this upload would cost, and structural refusals.

Runs in the server process on the header alone (Pillow's ``open`` reads no pixel data) and on a
cheap walk of the file's structure, so that an upload too expensive to decode is refused without
spending a worker on it, budget.py can reserve its memory before decoding, and decoder.py knows
whether it is expensive (cost.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from model_contract.pixels import STRIP_ROWS
from service.errors import DecodeTooExpensive
from service.pipeline.decode.cost import EXPENSIVE_DECODE_S, QUICK_DECODE_S, decode_seconds
from service.pipeline.decode.image import DRAFT_HEADROOM, decoding_errors, open_image

# A progressive JPEG is decoded scan by scan, each scan touching every block of the image: a
# file of thousands of empty refinement scans took Pillow tens of seconds, and 96 scans of a
# 7000x7000 grey image 9 s (~2 ns per pixel and scan, here). Encoders write 6-10 scans
# (libjpeg's progression script), mozjpeg's scan optimisation a few more; libjpeg-turbo's own
# tools treat hundreds as hostile (its -maxscans option exists for exactly this file). So: at
# most MAX_JPEG_SCANS scans, and at most MAX_JPEG_SCAN_PIXELS pixels × scans (30 full passes
# over a 50 MP photo; an honest progressive one makes about 10, 1.1 s to decode here).
MAX_JPEG_SCANS = 100
MAX_JPEG_SCAN_PIXELS = 1_500_000_000
# A PNG's data may be split into any number of chunks; Pillow walks them one by one in Python,
# so a file of a million empty chunks keeps a decoder busy for seconds. Encoders write chunks of
# 8-64 kB (a 20 MB upload: a few thousand).
MAX_PNG_CHUNKS = 20_000

# Bytes of an upload compared at a time when counting scans: bounds the temporary arrays.
_SCAN_BLOCK = 1 << 20
_ORIENTATION = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG markers without a length field (SOI, EOI, TEM, RSTn).
_STANDALONE = {0x01, 0xD8, 0xD9, *range(0xD0, 0xD8)}
# Start-of-frame markers (C4 is DHT, C8 JPG, CC DAC); of them baseline and extended Huffman DCT.
_FRAMES = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}
_BASELINE_FRAMES = {0xC0, 0xC1}


@dataclass(frozen=True)
class DecodePlan:
    """What decoding an upload will hold at its peak and how long it will take, estimated from
    its header."""

    width: int
    height: int
    mode: str
    memory_bytes: int
    decode_s: float = 0.0
    baseline_jpeg: bool = False  # 8-bit, Huffman-coded, one scan (cost.py)

    @property
    def expensive(self) -> bool:
        """Too slow for the lane kept for cheap uploads (cost.py)."""
        return self.decode_s > EXPENSIVE_DECODE_S

    @property
    def quick(self) -> bool:
        """Safe to decode in the server's own decode thread, without a worker (cost.py)."""
        return self.baseline_jpeg and self.decode_s <= QUICK_DECODE_S


def _bytes_per_pixel(mode: str) -> int:
    # Pillow's storage, not the file's: RGB, LA and friends take 4 bytes a pixel in memory.
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _markers(data: bytes) -> Iterator[tuple[int, int]]:
    """(offset, marker) of each marker segment up to and including the first SOS."""
    pos = 2  # after SOI
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        yield pos, marker
        if marker == 0xDA:
            return
        if marker in _STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length


def _first_scan(data: bytes) -> int:
    """Offset of the first SOS marker, walking the marker segments before it (-1: none)."""
    return next((pos for pos, marker in _markers(data) if marker == 0xDA), -1)


def _baseline_frame(data: bytes) -> int:
    """Offset of the file's start of frame when it is the only one before the first scan and
    a Huffman-coded DCT frame (SOF0/SOF1); -1 otherwise."""
    frames = [(pos, m) for pos, m in _markers(data) if m in _FRAMES]
    if len(frames) != 1 or frames[0][1] not in _BASELINE_FRAMES:
        return -1
    return frames[0][0]


def is_baseline_jpeg(data: bytes, scans: int) -> bool:
    """One scan, a Huffman-coded DCT frame (SOF0/SOF1) of 8-bit samples: libjpeg decodes it in
    one pass whose time follows its pixels and bytes, so no structure can make it slow."""
    pos = _baseline_frame(data) if scans == 1 else -1
    return pos >= 0 and pos + 4 < len(data) and data[pos + 4] == 8  # sample precision


def decodes_one_scan(data: bytes) -> bool:
    """A sequential Huffman frame (SOF0/SOF1) whose first scan holds every component: libjpeg
    decodes that scan and nothing after it (a later SOS stops the decode with an error, "broken
    data stream"), so the file's further scans cost no decoding and need no counting. Skipping
    the count spares a 2 MB phone photo 0.9 ms of walking its bytes."""
    frame, scan = _baseline_frame(data), _first_scan(data)
    if frame < 0 or scan < 0:
        return False
    components = frame + 9  # FF Cn, length, precision, height, width, then Nf
    in_scan = scan + 4  # FF DA, length, then Ns
    return in_scan < len(data) and data[in_scan] == data[components]


def jpeg_scan_count(data: bytes) -> int:
    """Scans in a JPEG: SOS markers from the first one on.

    Entropy-coded data never holds FF DA (an FF there is stuffed with 00 or is a marker), so
    counting after the first scan's start is exact for the file's own scans; the table segments
    between scans could contain the pair only by chance, which merely adds to the count.

    A JPEG that is not one scan (``decodes_one_scan``) is walked whole, in the server: NumPy
    finds the DA bytes and looks at the byte before each, a block at a time, in 0.9 ms for 2 MB
    where ``bytes.count`` took 2.6 ms, and outside the GIL, so the event loop keeps serving.
    """
    start = _first_scan(data)
    if start < 0:
        return 0
    raw = np.frombuffer(data, np.uint8)
    count = 0
    for block in range(start + 1, len(raw), _SCAN_BLOCK):
        markers = np.flatnonzero(raw[block : block + _SCAN_BLOCK] == 0xDA) + block
        count += int(np.count_nonzero(raw[markers - 1] == 0xFF))
    return count


def png_chunk_count(data: bytes, limit: int) -> int:
    """Chunks in a PNG, walking their length fields; stops counting past ``limit``."""
    pos, count = len(_PNG_SIGNATURE), 0
    while pos + 8 <= len(data) and count <= limit:
        (length,) = struct.unpack_from(">I", data, pos)
        count += 1
        if data[pos + 4 : pos + 8] == b"IEND":
            break
        pos += 12 + length  # length, type, data, CRC
    return count


def check_structure(data: bytes, pixels: int) -> int:
    """Refuse files whose structure alone makes them too expensive to decode (422); returns a
    JPEG's scans that libjpeg will decode (0 for other formats), which the time estimate reads."""
    if data.startswith(b"\xff\xd8"):
        scans = 1 if decodes_one_scan(data) else jpeg_scan_count(data)
        if scans > MAX_JPEG_SCANS or scans * pixels > MAX_JPEG_SCAN_PIXELS:
            raise DecodeTooExpensive(
                f"JPEG has {scans} scans of {pixels} pixels, over the limits of "
                f"{MAX_JPEG_SCANS} scans and {MAX_JPEG_SCAN_PIXELS} pixels x scans: "
                "progressive encoders write about 10"
            )
        return scans
    if data.startswith(_PNG_SIGNATURE) and png_chunk_count(data, MAX_PNG_CHUNKS) > MAX_PNG_CHUNKS:
        raise DecodeTooExpensive(
            f"PNG has over {MAX_PNG_CHUNKS} chunks; encoders write a few thousand at most"
        )
    return 0


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation from the header (img.getexif() would decode a PNG to look further)."""
    tags = getattr(img, "tag_v2", None)  # TIFF: its own tags
    if tags is not None:
        return _as_orientation(tags.get(_ORIENTATION))
    raw = img.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    try:
        exif.load(raw)
    except Exception:  # unreadable EXIF: exif_transpose will not rotate either
        return 1
    return _as_orientation(exif.get(_ORIENTATION))


def _as_orientation(value: object) -> int:
    # Files in the wild store the tag as text, a tuple or garbage; exif_transpose rotates only
    # for the integers 2-8, so anything else is "upright" for the estimate too.
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _estimate(img: Image.Image, full_size: tuple[int, int]) -> int:
    """Bytes held at the decode's peak: the decoded image, plus what its decoder keeps."""
    width, height = img.size
    decoded = width * height * _bytes_per_pixel(img.mode)
    total = decoded
    if _orientation(img) != 1:  # exif_transpose copies the image
        total += decoded
    if img.format == "JPEG" and img.info.get("progressive"):
        # libjpeg keeps every coefficient of a progressive file until its last scan: 2 bytes
        # per pixel and component at full size, whatever size the draft decodes to.
        total += full_size[0] * full_size[1] * 2 * len(img.getbands())
    if img.mode != "RGB":  # to_model_input converts STRIP_ROWS rows at a time: ~5 copies
        total += width * STRIP_ROWS * 4 * 5
    if img.format == "WEBP":  # libwebp decodes into its own buffer, then Pillow copies it
        total += decoded
    return total


def plan_decode(data: bytes, max_pixels: int, draft_to: int | None) -> DecodePlan:
    """Header and structure checks; raises ServiceError 400/413/415/422 for a refusal."""
    img = open_image(data, max_pixels)
    full_size = img.size
    scans = check_structure(data, full_size[0] * full_size[1])
    # A header Pillow opened can still hold surprises for the estimate: a bad file is a 400.
    with decoding_errors():
        seconds = decode_seconds(img, len(data), scans)  # of the full size: before the draft
        if draft_to and img.format == "JPEG":
            side = draft_to * DRAFT_HEADROOM
            img.draft(img.mode, (side, side))  # only sets the size and mode the decode will give
        baseline = img.format == "JPEG" and is_baseline_jpeg(data, scans)
        return DecodePlan(*full_size, img.mode, _estimate(img, full_size), seconds, baseline)
