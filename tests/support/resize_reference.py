"""The reference the numpy bicubic resize (operators/imaging/bicubic.py) must reproduce: ``to_model_input``
as it was written with torch's ``F.interpolate`` (the app no longer imports torch for it), and real DICOM
images to compare on."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from pydicom.data import get_testdata_file

from operators.imaging.preprocessing import CLIP_MEAN, CLIP_STD, IMAGE_SIZE, decode_frame, to_unit


def torch_model_input(unit: np.ndarray) -> np.ndarray:
    """``H x W`` or ``H x W x 3`` in [0, 1] -> CLIP-normalised ``3 x 224 x 224``, resized by torch."""
    tensor = torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32))
    tensor = tensor[None, None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[None]
    height, width = tensor.shape[-2:]
    scale = IMAGE_SIZE / min(height, width)
    size = (max(IMAGE_SIZE, math.floor(height * scale + 0.5)), max(IMAGE_SIZE, math.floor(width * scale + 0.5)))
    tensor = F.interpolate(tensor, size=size, mode="bicubic", align_corners=False, antialias=scale < 1)
    top, left = (size[0] - IMAGE_SIZE) // 2, (size[1] - IMAGE_SIZE) // 2
    tensor = tensor[0, :, top : top + IMAGE_SIZE, left : left + IMAGE_SIZE].clamp_(0.0, 1.0)
    image = tensor.expand(3, -1, -1).numpy() if tensor.shape[0] == 1 else tensor.numpy()
    return (image - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None]


#: pydicom's test images of several sizes, photometric interpretations and modalities (CT, MR, CR, US, SC)
REAL_IMAGES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "examples_palette.dcm", "JPGExtended.dcm", "US1_UNCR.dcm",
               "MR2_UNCR.dcm", "RG3_UNCR.dcm", "RG1_UNCR.dcm"]


def real_image(name: str) -> np.ndarray:
    """The first frame of pydicom test file ``name`` in [0, 1], as preprocessing hands it to the resize."""
    path = get_testdata_file(name)
    if path is None:  # pydicom-data's files come from the network when not installed
        pytest.skip(f"{name}: pydicom's test file is not available offline on this machine")
    ds = pydicom.dcmread(path)
    return to_unit(ds, decode_frame(ds, None))
