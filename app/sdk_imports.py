"""Import the MONAI Deploy SDK's core and its two DICOM operators without MONAI core and torch.

``monai.deploy`` lives inside the ``monai`` package, so ``import monai.deploy.core`` first runs MONAI
core's ``monai/__init__.py`` (torch, torchvision: ~4 s of a quiet start, most of it); the SDK's
``monai/deploy/operators/__init__.py`` imports every operator, the MONAI Bundle one included; and
``monai.deploy.core.models`` imports torch eagerly through ``optional_import`` for its TorchScript and
Triton model classes. This app uses none of them: its operators are its own, plus the SDK's
``DICOMDataLoaderOperator`` and ``DICOMSeriesSelectorOperator`` modules, which need only pydicom.

So, before the first SDK import, ``monai`` and ``monai.deploy.operators`` are registered as bare
packages (their folders searched, their ``__init__`` not run), and torch is hidden while the SDK core
loads (its ``optional_import`` then records torch as missing; the TorchScript model classes it serves
are not used here). torch is visible again afterwards, for the PyTorch backend. The cost: MONAI core
itself (``monai.transforms`` ...) cannot be imported in this process afterwards; nothing in the app does.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def _bare_package(name: str) -> None:
    """``name`` as a package whose submodules import as usual, without running its ``__init__``."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package")
    module = types.ModuleType(name)
    module.__path__ = list(spec.submodule_search_locations)
    module.__spec__ = spec
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def import_sdk_lean() -> None:
    """Import ``monai.deploy.core`` and ``monai.deploy.conditions`` the lean way (see the module's
    docstring); where ``monai`` is already imported the SDK is used as it is."""
    if "monai" in sys.modules:
        return
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # type: ignore[assignment]  # "import torch" raises ImportError
    try:
        _bare_package("monai")
        import monai.deploy  # noqa: F401  (the SDK's own __init__, which imports its core)

        _bare_package("monai.deploy.operators")
        import monai.deploy.conditions  # noqa: F401
        import monai.deploy.core  # noqa: F401
    finally:
        if hide_torch and sys.modules.get("torch", ...) is None:
            del sys.modules["torch"]
