"""Refusal of images that may carry PHI burned into the pixels.

PS3.15 E.2: the Basic Profile "does not address information burned-in to the pixels" unless the Clean
Pixel Data Option is applied, and this app does not clean pixels. So images that declare burned-in
annotation (Burned In Annotation (0028,0301) = YES, PS3.3 C.7.6.1.1.5) or whose modality or SOP class
commonly carries it (ultrasound, secondary capture, "other") are refused unless a site accepts them.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.uid import UID

#: Modalities whose images commonly carry annotations burned into the pixels (PS3.3 C.7.3.1.1.1).
BURNED_IN_PRONE_MODALITIES = frozenset({"US", "SC", "OT"})
#: SOP classes that commonly carry burned-in annotations: ultrasound and the secondary capture family.
BURNED_IN_PRONE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture Image Storage
    }
)
ACCEPT_SETTING = "deidentification.accept_burned_in_annotation"


def burned_in_phi_risk(ds: Dataset) -> str | None:
    """Why ``ds`` may carry burned-in PHI, or None. The reason names only the attribute, modality or SOP class."""
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        cause = "Burned In Annotation (0028,0301) is YES"
    elif str(ds.get("Modality", "")) in BURNED_IN_PRONE_MODALITIES:
        cause = f"modality {ds.Modality} commonly carries burned-in annotation"
    elif str(ds.get("SOPClassUID", "")) in BURNED_IN_PRONE_SOP_CLASSES:
        cause = f"{UID(ds.SOPClassUID).name} commonly carries burned-in annotation"
    else:
        return None
    return f"refused by de-identification: {cause}; pixel data is not cleaned (a site may accept with {ACCEPT_SETTING})"
