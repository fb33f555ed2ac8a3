"""Uploads that are cheap to send and expensive to decode, and a photo with a large ICC profile.

Each is built here byte by byte in well under a second or two; the test module caches them for
the session.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image
from reliability_images import png_file

# The scan bomb: a 7000x7000 grey progressive JPEG (49 MP, under the 50 MP limit).
BOMB_SIDE = 7000


def progressive_grey_jpeg(side: int = BOMB_SIDE) -> bytes:
    """A flat grey progressive JPEG: libjpeg's script writes 6 scans for one component."""
    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, "JPEG", progressive=True, quality=90)
    return buffer.getvalue()


def with_extra_scans(progressive: bytes, extra: int) -> bytes:
    """``progressive`` plus ``extra`` copies of its last scan (an AC refinement) before EOI.

    Each copy is ~75 bytes and makes the decoder walk every block of the image once more.
    """
    last = progressive.rindex(b"\xff\xda")
    scan = progressive[last:-2]  # SOS header and its entropy-coded data, up to EOI
    return progressive[:-2] + scan * extra + b"\xff\xd9"


def big_rgba_png(width: int = 8000, height: int = 6249) -> bytes:
    """A valid RGBA PNG of a horizontal gradient under a varying alpha, compressed to ~200 kB.

    The first row is stored plainly; every other row uses the Up filter and is all zeros, so
    zlib squeezes 200 MB of pixels into a fraction of a megabyte in about a second.
    """
    xs = range(width)
    first = bytes(v for x in xs for v in (x % 256, (x // 32) % 256, 200, 64 + x % 192))
    rest = b"\x02" + bytes(width * 4)
    packer = zlib.compressobj(6)
    parts = [packer.compress(b"\x00" + first)]
    block = rest * 256
    for _ in range((height - 1) // 256):
        parts.append(packer.compress(block))
    parts += [packer.compress(rest * ((height - 1) % 256)), packer.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return png_file(ihdr, b"".join(parts))


def rle8_bmp(side: int = BOMB_SIDE, run: int = 24) -> bytes:
    """A valid 8-bit grey BMP of side×side in vertical stripes, run-length encoded (BI_RLE8) in
    runs of ``run`` pixels: 2 bytes a run, ~4 MB at the defaults.

    Pillow decodes RLE in Python, a loop step per run: this one takes seconds, within every
    limit (the pixel limit, the upload limit, the decode time budget).
    """
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    runs = [(min(run, side - x), (x // run * 37) % 256) for x in range(0, side, run)]
    row = b"".join(bytes(r) for r in runs) + b"\x00\x00"  # the runs, end of line
    pixels = row * side + b"\x00\x01"  # end of bitmap
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return head + info + palette + pixels


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _padded(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def grey_icc_profile(size: int) -> bytes:
    """A valid ICC v2 grey display profile of about ``size`` bytes (LittleCMS builds a
    transform from it).

    Camera and print profiles run to megabytes (CLUTs, vendor tags); here the bulk is a vendor
    tag of binary data (ICC ``dataType``), which colour engines skip as they should.
    """
    text = b"large test profile\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    wtpt = b"XYZ " + bytes(4) + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    cprt = b"text" + bytes(4) + b"no copyright, test data\x00"
    entries = 1024
    points = [round(65535 * (i / (entries - 1)) ** 2.2) for i in range(entries)]
    curve = b"curv" + bytes(4) + struct.pack(f">I{entries}H", entries, *points)
    vendor = b"data" + bytes(4) + struct.pack(">I", 1) + random.Random(0).randbytes(size)
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"cprt", cprt), (b"kTRC", curve), (b"zvnd", vendor)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += _padded(data)
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrGRAYXYZ "
        + struct.pack(">6H", 2026, 12, 1, 0, 0, 0)
        + b"acsp"
        + bytes(24)
        + struct.pack(">I", 0)  # perceptual intent
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + bytes(48)
    )
    assert len(header) == 128
    return header + table + body


def png_with_icc(photo: Image.Image, profile: bytes) -> bytes:
    buffer = io.BytesIO()
    photo.save(buffer, "PNG", icc_profile=profile)
    return buffer.getvalue()
