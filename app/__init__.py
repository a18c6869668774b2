"""BiomedCLIP zero-shot DICOM SR application (MONAI Deploy)."""
