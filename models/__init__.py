"""Model package folder and the code that builds it (``models.builder``)."""
