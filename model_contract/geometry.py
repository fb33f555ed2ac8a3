"""How a ``Preprocessing`` is applied to an image of a given size: torchvision's eval transform
(resize the shorter side, center-crop). The service's decoder and the exporter's verification
photos both use these, so the graph is verified on exactly the pixels the service feeds it."""

from __future__ import annotations

from .metadata import Preprocessing


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's rule: shorter side → ``size``, longer side keeps the aspect (floored)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_offsets(width: int, height: int, crop: int) -> tuple[int, int]:
    """(left, top) of a centered ``crop``-square, rounded as torchvision's center_crop does."""
    return round((width - crop) / 2.0), round((height - crop) / 2.0)


def crop_box(width: int, height: int, pre: Preprocessing) -> tuple[float, float, float, float]:
    """The source region that resize-then-center-crop keeps, in source pixel coordinates."""
    new_w, new_h = resized_size(width, height, pre.resize_size)
    crop = pre.crop_size  # ≤ resize_size (Preprocessing checks it), so the crop lies inside
    left, top = crop_offsets(new_w, new_h, crop)
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
