"""Tests for the procedural world: scenes, domains, captions, prompts and rendered sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedgray.data import world_set
from fedgray.data.registry import load_dataset
from fedgray.data.world import (
    CLASS_NAMES,
    COLOURS,
    DOMAINS,
    SHAPES,
    caption,
    caption_vocabulary,
    class_prompts,
    render,
    sample_scene,
)
from fedgray.data.world_set import make_world_set
from tests.helpers import assert_close


def test_scene_sampling_is_deterministic_and_covers_both_kinds() -> None:
    scenes = [sample_scene(i, seed=3) for i in range(400)]
    assert scenes == [sample_scene(i, seed=3) for i in range(400)]
    assert scenes != [sample_scene(i, seed=4) for i in range(400)]
    digits = sum(s.kind == "digit" for s in scenes)
    assert 0.2 < digits / len(scenes) < 0.4
    assert {s.shape for s in scenes if s.kind == "shape"} == set(SHAPES)
    assert all(CLASS_NAMES[s.label] == s.name for s in scenes)


@pytest.mark.parametrize("domain", DOMAINS)
def test_render_is_deterministic_uint8(domain: str) -> None:
    scene = sample_scene(5, seed=0)
    image = render(scene, domain=domain, index=5, seed=0, image_size=24)
    assert image.dtype == np.uint8 and image.shape == (24, 24, 3)
    np.testing.assert_array_equal(
        image, render(scene, domain=domain, index=5, seed=0, image_size=24)
    )
    assert not np.array_equal(image, render(scene, domain=domain, index=5, seed=1, image_size=24))


def test_domains_relate_as_specified() -> None:
    for index in range(20):
        scene = sample_scene(index, seed=0)
        photo, inverted, noisy, sketch = (
            render(scene, domain=d, index=index, seed=0).astype(np.int64)
            for d in ("photo", "inverted", "noisy", "sketch")
        )
        np.testing.assert_array_equal(inverted, 255 - photo)
        assert np.abs(noisy - photo).mean() > 10
        assert abs(noisy.mean() - photo.mean()) < 8
        assert (sketch[..., 0] == sketch[..., 1]).all() and (sketch[..., 1] == sketch[..., 2]).all()
        assert (sketch == 255).mean() > 0.6 and sketch.min() < 60  # white paper, dark lines


def test_noise_sigma_controls_noise() -> None:
    scene = sample_scene(0, seed=0)
    photo = render(scene, domain="photo", index=0, seed=0).astype(float)
    spread = [
        np.abs(render(scene, domain="noisy", index=0, seed=0, noise_sigma=s) - photo).mean()
        for s in (0.05, 0.3)
    ]
    assert spread[0] < spread[1]


def test_full_captions() -> None:
    shape = next(s for i in range(50) if (s := sample_scene(i, seed=0)).kind == "shape")
    digit = next(s for i in range(50) if (s := sample_scene(i, seed=0)).kind == "digit")
    assert caption(shape, domain="photo").endswith(
        f"{shape.colour} {shape.shape} at the {shape.position}"
    )
    assert (
        caption(shape, domain="sketch") == f"a {shape.size} {shape.shape} at the {shape.position}"
    )
    assert caption(digit, domain="noisy") == f"the digit {digit.digit} in {digit.colour}"
    assert caption(digit, domain="sketch") == f"the digit {digit.digit}"


def test_sketch_captions_have_no_colour_words() -> None:
    rng = np.random.default_rng(0)
    for index in range(200):
        scene = sample_scene(index, seed=1)
        for style in ("full", "varied"):
            words = set(caption(scene, domain="sketch", style=style, rng=rng).split())
            assert not words & set(COLOURS)


def test_varied_captions_contain_the_class_prompts() -> None:
    rng = np.random.default_rng(0)
    seen = {
        caption(sample_scene(i, seed=0), domain="photo", style="varied", rng=rng)
        for i in range(3000)
    }
    prompts = [p for ps in class_prompts(domain="photo") for p in ps]
    assert all(ps[0] in seen for ps in class_prompts(domain="photo"))  # the bare names
    assert sum(p in seen for p in prompts) / len(prompts) > 0.8
    with pytest.raises(ValueError, match="rng"):
        caption(sample_scene(0, seed=0), domain="photo", style="varied")


def test_class_prompts_cover_all_classes() -> None:
    coloured, sketch = class_prompts(domain="photo"), class_prompts(domain="sketch")
    assert len(coloured) == len(sketch) == len(CLASS_NAMES) == 17
    assert coloured[0][:2] == ["a circle", "a red circle"]
    assert coloured[7][:2] == ["the digit 0", "the digit 0 in red"]
    assert all(len(p) == 1 + len(COLOURS) for p in coloured)
    assert sketch[16] == ["the digit 9"]


def test_unknown_domain_and_style() -> None:
    scene = sample_scene(0, seed=0)
    with pytest.raises(ValueError, match="unknown domain 'cartoon'; known: photo"):
        render(scene, domain="cartoon", index=0, seed=0)
    with pytest.raises(ValueError, match="image_size must be >= 8"):
        render(scene, domain="photo", index=0, seed=0, image_size=4)
    with pytest.raises(ValueError, match="unknown caption style"):
        caption(scene, domain="photo", style="short")


def test_make_world_set_matches_scenes_and_renders() -> None:
    data = make_world_set(30, seed=2, domain="inverted", offset=100)
    assert len(data) == 30 and data.images.shape == (30, 3, 32, 32)
    assert data.images.dtype == torch.float32 and data.name == "world/inverted"
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    for row in (0, 29):
        scene = sample_scene(100 + row, seed=2)
        assert data.labels[row] == scene.label
        assert data.captions[row] == caption(scene, domain="inverted")
        pixels = render(scene, domain="inverted", index=100 + row, seed=2)
        assert_close(data.images[row], torch.from_numpy(pixels).permute(2, 0, 1) / 255.0, terms=1)
    picked = data.subset([3, 1])
    assert picked.captions == [data.captions[3], data.captions[1]]
    assert torch.equal(picked.images[1], data.images[1]) and picked.labels[0] == data.labels[3]
    again = make_world_set(10, seed=2, domain="inverted", offset=110)
    assert torch.equal(again.images, data.images[10:20])


@pytest.mark.parametrize(("domain", "style"), [("photo", "varied"), ("noisy", "full")])
def test_a_worker_pool_renders_the_same_set_as_one_loop(
    domain: str, style: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(world_set, "_BLOCK", 7)  # 40 scenes: six blocks over three workers
    options = {"seed": 4, "domain": domain, "offset": 50, "caption_style": style}
    serial = make_world_set(40, **options)
    pooled = make_world_set(40, workers=3, **options)
    assert torch.equal(pooled.images, serial.images)
    assert pooled.captions == serial.captions and torch.equal(pooled.labels, serial.labels)
    assert len(set(serial.captions)) > 10  # forty different scenes, not one repeated
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        make_world_set(4, workers=0, **options)


@pytest.mark.parametrize(("domain", "size"), [("photo", 640), ("sketch", 80), ("noisy", 640)])
def test_every_caption_is_in_the_public_vocabulary(domain: str, size: int) -> None:
    vocabulary = caption_vocabulary(domain=domain)
    assert len(vocabulary) == len(set(vocabulary)) == size
    dataset = load_dataset(f"world/{domain}", split="train", size=400, seed=5)
    assert set(dataset.captions) <= set(vocabulary)
    assert dataset.public_captions == vocabulary
    assert dataset.subset([0, 1]).public_captions == vocabulary
