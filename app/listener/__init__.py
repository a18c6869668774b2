"""A light DICOM listener beside the MAP (like MONAI Deploy's Informatics Gateway).

Receives studies by C-STORE (PS3.4 Annex B), spools each instance durably, declares a study complete
after a quiet period, runs the MAP application once per arrived study, and sends the SR back to the
PACS by C-STORE. A journal makes every step survive a crash. ``python -m app.listener --config FILE``.
"""
