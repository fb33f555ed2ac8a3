"""How long an upload's decode will take, estimated from its header before any pixel is decoded,
and so whether it is cheap or expensive: an expensive one may not take the last free decode
worker (decoder.py), so cheap uploads always have one.

The figures are ``preprocess`` (image.py: decode, conversion, resize, crop) of colour photos
in one process on the idle 2-core machine, Pillow 13, per pixel of the full image. The estimate
only sorts uploads into the two lanes, erring towards expensive (a flat grey 7000x7000 PNG,
estimated 2 s, takes 0.4 s); it is no deadline (EFFICIENTNET_DECODE_TIMEOUT_S is).
"""

from __future__ import annotations

from PIL import Image

# A baseline JPEG decodes drafted (image.py): 1.2-1.9 ns per pixel from 12 to 50 MP (a 12 MP
# phone photo 23 ms, 4:4:4 at quality 95 41 ms, 50 MP 59 ms).
JPEG_NS_PER_PIXEL = 2.0
# A progressive JPEG walks every block once per scan: 0.64-0.82 ns per pixel and scan for
# colour photos of 12-50 MP at libjpeg's 10 scans (12 MP: 76 ms, 50 MP: 320 ms) and for a
# 49 MP grey one of 6 scans (194 ms).
JPEG_NS_PER_PIXEL_SCAN = 1.0
# And every JPEG's entropy decoding follows its bytes: noise at quality 100 decodes at 8-22 ns
# per byte on top of its pixels (12 MP in 10 MB: 143 ms, 2000x2000 in 1.8 MB: 48 ms, 20 MP in
# 5.3 MB: 124 ms), where a camera's 2 MB photo spends ~10 ms of its 34 ms on them.
JPEG_NS_PER_BYTE = 30.0
# Every other format decodes the whole image: PNG 31-56 ns per pixel (12 MP: 367 ms), WebP
# 19-38 (12 MP lossy: 301 ms, lossless: 458 ms), TIFF raw 8-12 and LZW 24-33, GIF 14-17,
# BMP 11-15.
OTHER_NS_PER_PIXEL = 40.0
# Pillow decodes some codecs in Python (its ``Image.DECODERS``; among the formats served, BMP's
# RLE8 and RLE4): a loop step for every run. A 7000x7000 RLE8 BMP took 0.70 s as 0.4 MB of
# 255-pixel runs, 2.9 s as 6 MB of 16-pixel runs and 5.9 s as 24 MB of 4-pixel runs: ~11 ns
# per pixel plus 240-390 ns per byte of the file.
PYTHON_CODEC_NS_PER_BYTE = 400.0
# Past this estimate an upload is expensive. Every photo up to 12 MP counts as cheap in any
# format (estimates: phone JPEG 24 ms, progressive 120 ms, PNG or WebP 480 ms), so a cheap
# decode holds a worker for at most about half a second here; a 7000x7000 BMP or PNG (2 s)
# or a 50 MP progressive JPEG of 20 scans (1 s) is expensive.
EXPENSIVE_DECODE_S = 0.5

# A baseline JPEG (checks.py) estimated at most this long decodes in the server's decode thread
# itself rather than in a worker: its time follows its pixels and bytes, which the estimate
# bounds from above (the slowest such files measured: 45-48 ms), so it needs no worker's kill to
# stay bounded, and its memory is reserved from the budget like any other. A phone's 12 MP photo
# of 2 MB is quick (87 ms estimated); a bigger or noisier file takes a worker. Skipping the
# worker saves each upload the copies into and out of its region, two wake-ups and a process
# switch (BENCHMARKS.md, "Quick JPEGs decode in their thread").
QUICK_DECODE_S = 0.1

_NS = 1e-9


def decode_seconds(img: Image.Image, size: int, scans: int) -> float:
    """The decode's estimated time from the opened header ``img`` (its full size, before any
    draft), the upload's ``size`` in bytes and its JPEG ``scans`` (0 for other formats)."""
    width, height = img.size
    pixels = width * height
    if img.format == "JPEG":
        entropy = size * JPEG_NS_PER_BYTE * _NS
        if img.info.get("progressive"):
            return pixels * max(scans, 1) * JPEG_NS_PER_PIXEL_SCAN * _NS + entropy
        return pixels * JPEG_NS_PER_PIXEL * _NS + entropy
    seconds = pixels * OTHER_NS_PER_PIXEL * _NS
    if any(tile.codec_name in Image.DECODERS for tile in img.tile):
        seconds += size * PYTHON_CODEC_NS_PER_BYTE * _NS
    return seconds
