"""The Open Inference Protocol's tensor codec, without a server: exactness and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from tritonclient.utils import serialize_byte_tensor

from service.errors import BadRequest
from service.oip.codec import (
    Tensor,
    binary_sections,
    normalized_to_pixels,
    split_body,
    split_length_prefixed,
)
from service.oip.outputs import classification_strings

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalize(pixels_nhwc: np.ndarray) -> np.ndarray:
    """What a torchvision client sends: float32 NCHW (p/255 - mean)/std."""
    x = pixels_nhwc.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255)
    mean = np.asarray(MEAN, np.float32)[None, :, None, None]
    std = np.asarray(STD, np.float32)[None, :, None, None]
    return (x - mean) / std


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.just(3)))
)
def test_normalized_float32_from_8bit_pixels_comes_back_bit_exact(pixels: np.ndarray) -> None:
    result = normalized_to_pixels(normalize(pixels), MEAN, STD)
    np.testing.assert_array_equal(result.images, pixels)
    assert result.rounding_max_error < 1e-3  # only float32 noise, far from a rounding boundary


def test_non_integer_pixels_are_rounded_to_the_nearest_level_and_reported() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1, 4, 4, 3)).astype(np.float64)
    shifted = np.clip(pixels + 0.3, 0, 255)  # as if resized in float: between two levels
    x = normalize(shifted)
    result = normalized_to_pixels(x, MEAN, STD)
    np.testing.assert_array_equal(result.images, np.rint(shifted).astype(np.uint8))
    assert 0.29 < result.rounding_max_error < 0.31


def test_everything_up_to_half_a_level_outside_0_255_is_accepted() -> None:
    ends = np.array([-0.49, 255.49]).reshape(1, 1, 2, 1).repeat(3, axis=3)
    result = normalized_to_pixels(normalize(ends), MEAN, STD)
    assert result.images.ravel().tolist() == [0, 0, 0, 255, 255, 255]


@pytest.mark.parametrize("level", [-3.0, 260.0])
def test_values_no_image_can_produce_are_refused(level: float) -> None:
    x = normalize(np.full((1, 2, 2, 3), level))
    with pytest.raises(BadRequest, match=r"outside what \(pixels/255 - mean\)/std can give"):
        normalized_to_pixels(x, MEAN, STD)


def test_an_unnormalized_tensor_is_refused_not_silently_clipped() -> None:
    # A classic client bug: pixels 0..255 sent without normalizing.
    x = np.full((1, 3, 2, 2), 200.0, dtype=np.float32)
    with pytest.raises(BadRequest, match="pixel levels"):
        normalized_to_pixels(x, MEAN, STD)


def test_nan_is_refused() -> None:
    x = np.zeros((1, 3, 2, 2), dtype=np.float32)
    x[0, 1, 1, 1] = np.nan
    with pytest.raises(BadRequest, match="NaN"):
        normalized_to_pixels(x, MEAN, STD)


def test_bytes_elements_decode_exactly_as_tritonclient_encodes_them() -> None:
    elements = [b"\xff\xd8jpeg", b"", b"\x89PNG\r\n" * 50]
    raw = serialize_byte_tensor(np.array(elements, dtype=object)).item()
    assert split_length_prefixed("encoded_image", raw) == elements


def test_truncated_bytes_element_is_refused() -> None:
    raw = serialize_byte_tensor(np.array([b"abcdef"], dtype=object)).item()
    with pytest.raises(BadRequest, match="overruns"):
        split_length_prefixed("encoded_image", raw[:-1])


def test_binary_header_length_must_fit_the_body() -> None:
    assert split_body(b'{"a":1}xyz', "7") == (b'{"a":1}', b"xyz")
    assert split_body(b"{}", None) == (b"{}", b"")
    for bad in ("99", "0", "x"):
        with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
            split_body(b'{"a":1}', bad)


def test_binary_sizes_must_add_up_to_the_binary_section() -> None:
    tensor = Tensor(name="image", shape=[1], datatype="UINT8", parameters={"binary_data_size": 3})
    assert binary_sections([tensor], b"abc") == [b"abc"]
    with pytest.raises(
        BadRequest, match="holds 4 bytes but the inputs' binary_data_size add up to 3"
    ):
        binary_sections([tensor], b"abcd")


def test_classification_strings_are_tritons_format_best_first() -> None:
    probabilities = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    strings = classification_strings(probabilities, ["a", "b:c", "d"], 2)
    assert strings == [b"0.700000:1:b:c", b"0.200000:2:d", b"0.500000:0:a", b"0.300000:2:d"]
