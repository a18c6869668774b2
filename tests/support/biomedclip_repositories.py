"""BiomedCLIP's two Hugging Face repositories as a deployer carries them in, with seeded random weights (the real
ones cannot be downloaded here): the same file names, formats and layout.

- ``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``: ``open_clip_config.json`` (naming the text model
  by its hub id) and ``open_clip_pytorch_model.bin`` (a ``torch.save``d state dict);
- ``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract``: ``config.json``, ``vocab.txt``,
  ``tokenizer_config.json``, ``special_tokens_map.json``.

``hub_cache`` lays them out as ``huggingface-cli download`` leaves them in ``HF_HUB_CACHE``
(``models--org--name/blobs/<hash>``, ``snapshots/<revision>/<file>`` → the blob, ``refs/main`` = the revision);
``plain_folders`` as two ordinary folders (hard links to the same blobs: no second copy of 784 MB).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from models.builder import BIOMEDCLIP_CONFIG, HUB_REPO, TEXT_REPO, load_biomedclip, write_text_model

#: A revision id as the hub gives it (40 hex digits); any value works offline, refs/main names it.
REVISION = "0" * 39 + "1"


@dataclass(frozen=True)
class Repositories:
    hub_cache: Path  # HF_HUB_CACHE holding both repositories
    clip: Path  # the plain BiomedCLIP folder
    text: Path  # the plain BiomedBERT folder


def _files(seed: int, scratch: Path) -> dict[str, dict[str, Path]]:
    """The repositories' files, written once under ``scratch``."""
    import torch

    model, _, _ = load_biomedclip(None, seed, scratch / "random")
    clip, text = scratch / "clip", scratch / "text"
    clip.mkdir()
    text.mkdir()
    torch.save(model.state_dict(), clip / "open_clip_pytorch_model.bin")
    (clip / "open_clip_config.json").write_text(BIOMEDCLIP_CONFIG.read_text())  # the hub's, naming TEXT_REPO
    write_text_model(text)
    return {HUB_REPO: {p.name: p for p in clip.iterdir()}, TEXT_REPO: {p.name: p for p in text.iterdir()}}


def make_repositories(out: Path, seed: int) -> Repositories:
    files = _files(seed, Path(tempfile.mkdtemp(dir=out)))
    cache = out / "hub"
    for repo, named in files.items():
        root = cache / f"models--{repo.replace('/', '--')}"
        (root / "blobs").mkdir(parents=True)
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text(REVISION)
        snapshot = root / "snapshots" / REVISION
        snapshot.mkdir(parents=True)
        for name, path in named.items():
            blob = root / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
            os.replace(path, blob)
            (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    plain = {}
    for repo in files:
        folder = out / repo.rsplit("/", 1)[-1]
        folder.mkdir()
        snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / REVISION
        for link in snapshot.iterdir():
            os.link(link.resolve(), folder / link.name)
        plain[repo] = folder
    return Repositories(cache, plain[HUB_REPO], plain[TEXT_REPO])
