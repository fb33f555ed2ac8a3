"""Hostile images built byte by byte: decompression bombs and headers with absurd dimensions.

Each is small on the wire and claims a canvas whose full decode would take gigabytes, so a
service that decodes before checking the size shows it in its RSS.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_file(ihdr: bytes, idat: bytes) -> bytes:
    """A PNG of one IHDR, one IDAT (the compressed rows) and IEND."""
    framed = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
    return b"\x89PNG\r\n\x1a\n" + framed + _png_chunk(b"IEND", b"")


def png_header(width: int, height: int, *, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG signature and IHDR claiming ``width``×``height``, then one empty IDAT and IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return png_file(ihdr, zlib.compress(b""))


def png_bomb(side: int = 30_000) -> bytes:
    """A complete, valid 1-bit black PNG of side×side: ~110 kB that decodes to side² bytes (and
    to 3·side² once converted to RGB)."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)  # filter byte + packed 1-bit pixels
    packer = zlib.compressobj(9)
    chunks = [packer.compress(row * 1000) for _ in range(side // 1000)]
    chunks += [packer.compress(row * (side % 1000)), packer.flush()]
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return png_file(ihdr, b"".join(chunks))


def gif_canvas(width: int = 65_535, height: int = 65_535) -> bytes:
    """A GIF whose logical screen is width×height holding a single 1×1 frame."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global palette of 2 colours
    palette = b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + palette + frame + b";"


def gif_frame_header(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A GIF with a given screen and a (possibly larger) first frame size, 1 pixel of data."""
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    return head + b"," + struct.pack("<HHHHB", 0, 0, *frame, 0) + b"\x02\x02\x44\x01\x00;"


def small_image(fmt: str, size: tuple[int, int] = (48, 32), **params: object) -> bytes:
    """A small real-looking RGB gradient in ``fmt``."""
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def jpeg_claiming(width: int, height: int, base: bytes | None = None) -> bytes:
    """A real baseline JPEG whose SOF0 frame header is patched to claim width×height."""
    data = bytearray(base or small_image("JPEG"))
    sof = data.find(b"\xff\xc0")
    assert sof > 0, "no SOF0 marker"
    # FFC0, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_header(width: int, height: int) -> bytes:
    """A 24-bit BMP header claiming width×height (height may be negative: top-down), no pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def webp_claiming(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header claims width×height (each 1..16384)."""
    data = bytearray(small_image("WEBP", lossless=True))
    at = data.find(b"VP8L")
    assert at > 0, "Pillow did not write a simple lossless WebP"
    bits = struct.unpack("<I", data[at + 9 : at + 13])[0]
    bits = (bits & ~0x0FFFFFFF) | ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
    data[at + 9 : at + 13] = struct.pack("<I", bits)
    return bytes(data)
