"""Where ``build_model.py --weights DIR`` finds the text model BiomedCLIP's config names (docs/models.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.builder import TEXT_REPO, find_text_model, write_text_model


def test_the_text_model_is_found_in_dir_or_its_repository_named_subfolder_and_text_model_wins(tmp_path: Path) -> None:
    clip = tmp_path / "BiomedCLIP"
    inside = clip / TEXT_REPO.rsplit("/", 1)[-1]
    inside.mkdir(parents=True)
    write_text_model(inside)
    assert find_text_model(clip, None, TEXT_REPO) == inside
    write_text_model(clip)
    assert find_text_model(clip, None, TEXT_REPO) == clip
    elsewhere = tmp_path / "BiomedBERT"
    elsewhere.mkdir()
    write_text_model(elsewhere)
    assert find_text_model(clip, elsewhere, TEXT_REPO) == elsewhere.resolve()


def test_a_missing_text_model_names_the_repository_the_places_looked_and_the_option(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        find_text_model(tmp_path, None, TEXT_REPO)
    message = str(raised.value)
    assert TEXT_REPO in message and str(tmp_path) in message and "--text-model" in message and "\n" not in message
