"""PNG and JPEG pictures as model input.

A picture's pixel values are display values already: what a DICOM image becomes only after the
Modality LUT, VOI windowing and presentation (PS3.4 Annex N; ``operators.imaging.grey_levels``). So a
picture is not windowed: EXIF orientation is applied, grey (8- or 16-bit) and colour pixels are scaled
to [0, 1] by their bit depth (transparency is dropped, palette pictures are expanded to RGB), and from
there the DICOM path's geometry and normalisation apply unchanged (``to_model_input``: bicubic shorter
side 224, centre crop, CLIP mean/std).
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from operators.imaging.preprocessing import UnsupportedImage
from operators.intake.image_header import MAX_FRAME_SAMPLES

#: Container formats accepted, by Pillow's name.
FORMATS = ("PNG", "JPEG")


def picture_to_unit(data: bytes) -> tuple[str, np.ndarray]:
    """(format, ``H x W`` or ``H x W x 3`` float32 in [0, 1]); ``UnsupportedImage`` says why not."""
    try:
        picture = Image.open(BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise UnsupportedImage("not a PNG or JPEG picture") from None
    width, height = picture.size
    channels = len(picture.getbands())
    if width * height * channels > MAX_FRAME_SAMPLES:  # checked before decoding, as for DICOM frames
        raise UnsupportedImage(f"picture too large: {width} x {height} x {channels} samples (at most {MAX_FRAME_SAMPLES})")
    kind = str(picture.format)
    try:
        return kind, _unit(ImageOps.exif_transpose(picture))
    except (OSError, ValueError) as exc:  # truncated or corrupt picture data
        raise UnsupportedImage(f"picture could not be decoded ({type(exc).__name__})") from None


def _unit(picture: Image.Image) -> np.ndarray:
    if picture.mode.startswith("I"):  # 16-bit grey PNG (Pillow opens it as I;16 or I)
        return np.clip(np.asarray(picture, dtype=np.float32) / 65535.0, 0.0, 1.0)
    if picture.mode in ("L", "1"):
        return np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
    return np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
