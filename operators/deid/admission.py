"""Admission to de-identification: whether an original instance may be de-identified and passed on.

One decision, made on the original's header before anything is de-identified, for the app's
de-identification operator and for ``scripts/deidentify.py``. Both first run the input through the
intake inventory (``operators.intake.inventory``: not DICOM, truncated, unreadable, missing UIDs…);
this gate then refuses:

- an instance without pixel data (a non-image SOP class: SR, presentation state…; PS3.3 C.7.6.3):
  the app de-identifies images only;
- an image that may carry PHI burned into its pixels (``burned_in_phi_risk``; PS3.15 E.2: the Basic
  Profile does not clean pixel data), unless the site accepts burned-in annotation.

Reasons are one line and name only the SOP Class, attribute or modality, never anything about the patient.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.uid import UID

from operators.deid.burned_in_annotation import burned_in_phi_risk
from operators.intake.inventory import PIXEL_KEYWORDS


def admit(original: Dataset, *, accept_burned_in_annotation: bool) -> str | None:
    """None when ``original`` may be de-identified and passed on; else why not, in one line without PHI."""
    if not any(keyword in original for keyword in PIXEL_KEYWORDS):
        sop_class = UID(original.get("SOPClassUID") or "")
        return f"non-image SOP class: {sop_class.name or '(no SOP Class UID)'} (only images are de-identified)"
    if accept_burned_in_annotation:
        return None
    return burned_in_phi_risk(original)
