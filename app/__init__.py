"""BiomedCLIP zero-shot DICOM SR application (MONAI Deploy)."""

#: The application version, defined once: pyproject.toml reads it, app.yaml (the MAP packager's copy) is
#: checked against it by tests/unit/test_cli.py (``--version``).
__version__ = "1.0.0"
