"""The private coding scheme's concepts used by the SR, and its declaration in the SR.

``99BMCLIP`` is private (PS3.16 Section 8: designators beginning with "99"), so a receiving system
cannot look it up: PS3.3 C.12.1.1.2 (SOP Common module) asks for it in the Coding Scheme
Identification Sequence (0008,0110), which names it and who is responsible for it.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.sr.coding import Code

from operators.inference.zero_shot import LOCAL_SCHEME

#: NUM of each group: how far the top label's probability is above the runner-up's.
PROBABILITY_MARGIN = Code("ZSMARGIN", LOCAL_SCHEME, "Probability margin to runner-up")
#: Value of the group's qualitative evaluation when the top label is not a confident finding.
NO_CONFIDENT_FINDING = Code("NOCONF", LOCAL_SCHEME, "No confident finding")

SCHEME_NAME = "BiomedCLIP zero-shot application concepts"
SCHEME_RESPONSIBLE_ORGANIZATION = "BiomedCLIP MAP project (research use only); see docs/coding.md"


def coding_scheme_identification() -> Dataset:
    """The (0008,0110) item declaring ``99BMCLIP``: designator, name, responsible organization. No
    Coding Scheme Registry or UID: PS3.3 C.12.1.1.2 requires them only for registered schemes."""
    item = Dataset()
    item.CodingSchemeDesignator = LOCAL_SCHEME
    item.CodingSchemeName = SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = SCHEME_RESPONSIBLE_ORGANIZATION
    return item
