"""The CPU server models' embedding cache: answers only for the very bytes it was given, each image computed
once, bounded."""

from __future__ import annotations

import numpy as np
import pytest

from operators.inference.embedding_cache import EmbeddingCache, image_key


class Model:
    """Embeds an image as its first pixels, counting the images it computes."""

    def __init__(self) -> None:
        self.computed = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.computed += len(batch)
        return batch.reshape(len(batch), -1)[:, :4] * 2 if len(batch) else np.zeros((0, 4), np.float32)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def test_a_study_prefetched_image_by_image_is_answered_whole_from_the_cache() -> None:
    cache, model = EmbeddingCache(64), Model()
    study = _images(7)
    for image in study:  # the listener's prefetch: one request per image
        cache.embed(image[None], model)
    features, hits = cache.embed(study, model)  # the job: one batch
    assert (hits, model.computed) == (7, 7)
    np.testing.assert_array_equal(features, model(study))


def test_one_changed_pixel_is_computed_not_answered() -> None:
    cache, model = EmbeddingCache(64), Model()
    study = _images(2)
    cache.embed(study, model)
    changed = study.copy()
    changed[1, 2, 7, 7] = np.nextafter(changed[1, 2, 7, 7], np.float32(np.inf))
    features, hits = cache.embed(changed, model)
    assert hits == 1 and model.computed == 2 + 1
    np.testing.assert_array_equal(features, changed.reshape(2, -1)[:, :4] * 2)


def test_the_same_pixels_in_another_type_or_shape_are_another_image() -> None:
    image = _images(1)[0]
    keys = {image_key(image), image_key(image.astype(np.float16)), image_key(image.reshape(3, 4, 16)), image_key(image.copy())}
    assert len(keys) == 3


def test_an_image_repeated_in_a_batch_is_computed_once() -> None:
    cache, model = EmbeddingCache(64), Model()
    images = _images(2)
    features, hits = cache.embed(images[[0, 1, 0, 0]], model)
    assert (hits, model.computed) == (2, 2)
    np.testing.assert_array_equal(features[0], features[3])


def test_the_least_recently_used_images_leave_first_and_a_batch_larger_than_the_cache_is_still_answered() -> None:
    cache, model = EmbeddingCache(3), Model()
    images = _images(5)
    cache.embed(images[:3], model)
    cache.embed(images[:1], model)  # image 0 used again: image 1 is now the oldest
    cache.embed(images[3:4], model)
    assert len(cache) == 3
    assert cache.embed(images[[0, 2, 3]], model)[1] == 3 and cache.embed(images[1:2], model)[1] == 0
    features, _ = cache.embed(images, model)  # 5 images through a cache of 3
    np.testing.assert_array_equal(features, model(images))
    assert len(cache) == 3


def test_an_empty_batch_and_a_cache_of_nothing() -> None:
    cache, model = EmbeddingCache(2), Model()
    features, hits = cache.embed(_images(0), model)
    assert features.shape == (0, 4) and hits == 0
    with pytest.raises(ValueError, match="at least one"):
        EmbeddingCache(0)


def test_only_the_images_marked_to_keep_are_held() -> None:
    """The server keeps what the listener's prefetch sends; a client repeating one batch (perf_analyzer) is computed each time."""
    cache, model = EmbeddingCache(64), Model()
    images = _images(3)
    cache.embed(images, model, keep=[True, False, False])
    assert len(cache) == 1
    assert cache.embed(images, model, keep=[False] * 3)[1] == 1 and model.computed == 3 + 2
