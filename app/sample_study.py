"""The embedded sample study: study 98892001 of pydicom's ``dicomdirtests`` (fictitious patient), two CT
series of one study, CT2N (2 slices) and CT5N (5 slices). ``scripts/make_sample_study.py`` copies it
out; the web demo offers its middle CT5N slice."""

from __future__ import annotations

from pathlib import Path

import pydicom

SOURCE = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892001"
#: The demo's sample image: the middle slice of CT5N.
DEMO_IMAGE = SOURCE / "CT5N" / "2693"
