"""The numpy bicubic resize (operators/imaging/bicubic.py) against torch's ``F.interpolate`` it replaces:
the same values within float32 rounding, on random images of many shapes and on real DICOM images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from operators.imaging.bicubic import resize_crop
from operators.imaging.preprocessing import to_model_input
from tests.support.resize_reference import REAL_IMAGES, real_image, torch_model_input

#: float32 rounding (~1e-6 at 1.0, seen up to 1e-6 on the resize) divided by CLIP's std (~0.27), with room
TOLERANCE = 1e-5

# (input rows, columns) -> (output rows, columns): shrinking, enlarging, square, odd, 1 pixel wide, identity
SHAPES = [
    ((512, 512), (224, 224)), ((64, 64), (224, 224)), ((2140, 1760), (272, 224)), ((1760, 2140), (224, 272)),
    ((301, 299), (223, 225)), ((300, 301), (224, 224)), ((100, 37), (605, 224)), ((3, 3), (224, 224)),
    ((1, 7), (3, 20)), ((7, 1), (20, 3)), ((5, 5), (1, 1)), ((5, 9), (1, 3)), ((1, 1), (4, 4)),
    ((224, 300), (224, 300)), ((1000, 17), (13180, 224)), ((33, 2000), (224, 13576)), ((97, 4096), (41, 1024)),
]


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize(("shape", "size"), SHAPES)
def test_resize_equals_torch_interpolate_on_random_images(shape: tuple[int, int], size: tuple[int, int], antialias: bool) -> None:
    image = np.random.default_rng(sum(shape) + sum(size)).random((3, *shape), dtype=np.float32)
    expected = F.interpolate(torch.from_numpy(image)[None], size=size, mode="bicubic", align_corners=False, antialias=antialias)[0]
    assert np.abs(resize_crop(image, size, (0, 0, *size), antialias) - expected.numpy()).max() <= TOLERANCE


def test_a_crop_is_the_crop_of_the_full_resize() -> None:
    image = np.random.default_rng(7).random((1, 531, 389), dtype=np.float32)
    full = resize_crop(image, (306, 224), (0, 0, 306, 224), antialias=True)
    # the same weights; only the matrix product's summation order may differ
    assert np.abs(resize_crop(image, (306, 224), (41, 0, 224, 224), antialias=True) - full[:, 41:265]).max() <= 1e-6


@pytest.mark.parametrize("shape", [(512, 512), (64, 64), (2140, 1760), (1760, 2140), (224, 224), (225, 1000), (1, 300), (300, 1),
                                   (256, 256, 3), (480, 640, 3), (3, 5, 3)])
def test_model_input_equals_torch_on_random_images(shape: tuple[int, ...]) -> None:
    unit = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
    assert np.abs(to_model_input(unit) - torch_model_input(unit)).max() <= TOLERANCE


@pytest.mark.parametrize("name", REAL_IMAGES)
def test_model_input_equals_torch_on_real_images(name: str) -> None:
    unit = real_image(name)
    assert np.abs(to_model_input(unit) - torch_model_input(unit)).max() <= TOLERANCE
