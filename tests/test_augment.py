"""Augmentations: shapes and ranges, seeds, p = 0, that each changes what it claims to, refit against
fit_to_mnist, the recipes, and training with them (the "affine" recipe exactly as before)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from mnist_classifier import augment as A
from mnist_classifier.errors import ConfigError
from mnist_classifier.models import build_model
from mnist_classifier.fit import fit_to_mnist
from mnist_classifier.train import TrainConfig, fit, random_affine, save_result, train_architecture


@pytest.fixture(scope="module")
def digits(mnist):
    """300 test digits as (N, 1, 28, 28) floats, with labels."""
    x = torch.as_tensor(mnist.test_images[:300]).float().div(255).unsqueeze(1)
    return x, torch.as_tensor(mnist.test_labels[:300]).long()


def canvas(x):
    return F.pad(x, (A.CANVAS_MARGIN,) * 4)


def of_digit(digits, digit):
    x, y = digits
    return x[y == digit], y[y == digit]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


TRANSFORMS = {
    "geometry": lambda x, y, g, p: A.geometry(x, g, p=p),
    "elastic": lambda x, y, g, p: A.elastic(x, g, p=p),
    "warp": lambda x, y, g, p: A.warp(x, g, 0.3, 0.25, 24.0, 4.0, p, p, p),
    "stroke_width": lambda x, y, g, p: A.stroke_width(x, g, p=p),
    "styles": lambda x, y, g, p: A.styles(x, y, g, p=p),
    "open_fours": lambda x, y, g, p: A.open_fours(x, y, g, p=p),
    "partial_crop": lambda x, y, g, p: A.partial_crop(x, g, p=p),
}


# ---------------------------------------------------------------------------------------------- every transform

@pytest.mark.parametrize("name", TRANSFORMS)
def test_shape_range_and_seed(digits, name):
    x, y = digits
    a = TRANSFORMS[name](canvas(x), y, gen(1), 0.5)
    b = TRANSFORMS[name](canvas(x), y, gen(1), 0.5)
    c = TRANSFORMS[name](canvas(x), y, gen(2), 0.5)
    assert a.shape == canvas(x).shape and a.dtype == torch.float32
    assert torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    changed = (a != canvas(x)).flatten(1).any(1).float().mean().item()
    styled = torch.isin(y, torch.tensor([1, 7, 9])).float().mean().item()
    fours = (y == 4).float().mean().item()
    share = {"warp": 1 - 0.5 ** 3, "styles": 0.5 * styled, "open_fours": 0.5 * fours}.get(name, 0.5)  # warp: any of 3
    assert abs(changed - share) < 0.1


@pytest.mark.parametrize("name", TRANSFORMS)
def test_probability_zero_is_identity_and_draws_nothing(digits, name):
    x, y = digits
    g = gen(5)
    state = g.get_state()
    assert torch.equal(TRANSFORMS[name](canvas(x), y, g, 0.0), canvas(x))
    assert torch.equal(g.get_state(), state)


def test_choose_draws_only_for_a_real_choice():
    g = gen(0)
    state = g.get_state()
    assert A.choose(10, 1.0, g, "cpu").all() and not A.choose(10, 0.0, g, "cpu").any()
    assert torch.equal(g.get_state(), state)
    assert 300 < A.choose(1000, 0.4, g, "cpu").sum() < 500


# ---------------------------------------------------------------------------------------------- pen and geometry

def ink_mass(x):
    return x.sum((1, 2, 3))


def test_thicker_pen_adds_ink_thinner_takes_it_away(digits):
    x = canvas(digits[0])
    thick = A.stroke_width(x, gen(), thicker=1.0)
    thin = A.stroke_width(x, gen(), thicker=0.0)
    assert (ink_mass(thick) > ink_mass(x) * 1.1).float().mean() > 0.95
    assert (ink_mass(thin) < ink_mass(x)).float().mean() > 0.9  # faint digits also come out at full strength
    assert (ink_mass(thin) / ink_mass(x)).median() < 0.9
    assert A.stroke_width_px(thick).mean() > A.stroke_width_px(x).mean() + 0.3
    assert A.stroke_width_px(thin).mean() < A.stroke_width_px(x).mean() - 0.2
    assert thick[:, :, :2].max() == 0  # the paper stays paper


def test_stroke_width_estimate_matches_drawn_strokes():
    """A stroke drawn with the width measured on a digit measures as that width again: the styles' strokes
    match the digit's own pen (widths of MNIST's pens, vertical, slanted and diagonal)."""
    starts = torch.tensor([[[10.0, 8.0]], [[8.0, 10.0]], [[8.0, 8.0]]])
    ends = torch.tensor([[[10.0, 28.0]], [[28.0, 22.0]], [[26.0, 26.0]]])
    for width in (2.0, 2.5, 3.0):
        lines = A.draw_segments((36, 36), starts, ends, torch.full((3,), width))
        # Sub-pixel placement of a thin line's edges moves the estimate by up to a fifth.
        assert torch.allclose(A.stroke_width_px(lines), torch.full((3,), width), rtol=0.25)


def test_slant_shears_about_the_centre():
    bar = torch.zeros(1, 1, 36, 36)
    bar[..., 8:28, 17:19] = 1.0  # a vertical stroke
    g = gen(0)
    slanted = A.warp(bar, g, slant=0.3, p_slant=1.0)
    top, bottom = slanted[0, 0, 9], slanted[0, 0, 26]
    columns = torch.arange(36.0)
    shift = ((top * columns).sum() / top.sum() - (bottom * columns).sum() / bottom.sum()).item()
    shear = A._uniform(1, -0.3, 0.3, gen(0), "cpu").item()  # the same draw warp made
    expected = -17 * shear  # rows 9 and 26 are 17 apart; x' = x + shear * y, with y growing downwards
    assert shift == pytest.approx(expected, abs=0.3)


def test_elastic_moves_pixels_as_much_as_simards_field():
    """Oracle: scipy's gaussian_filter of uniform noise, scaled by alpha (Simard et al.'s recipe)."""
    rng = np.random.default_rng(0)
    reference = np.sqrt(np.mean([ndimage.gaussian_filter(rng.uniform(-1, 1, (36, 36)), 4.0, mode="reflect") ** 2
                                 for _ in range(200)])) * 34.0
    ys, xs = torch.meshgrid(torch.arange(36.0), torch.arange(36.0), indexing="ij")
    coordinates = torch.stack([xs, ys]).unsqueeze(0).repeat(200, 1, 1, 1)  # each pixel holds where it is
    moved = A.elastic(coordinates, gen(), alpha=34.0, sigma=4.0) - coordinates
    rms = moved[:, :, 8:28, 8:28].pow(2).mean().sqrt().item()  # away from the zero padding at the border
    assert rms == pytest.approx(reference, rel=0.25)


def test_partial_crop_cuts_one_side_by_at_most_the_limit(digits):
    x = canvas(digits[0])
    cropped = A.partial_crop(x, gen(), most=3)
    box = A.ink_box(x)
    gone = (cropped != x)[:, 0]
    assert (cropped <= x).all() and (cropped[~gone.unsqueeze(1)] == x[~gone.unsqueeze(1)]).all()
    ys, xs = rows_and_columns(x)
    n = len(x)
    near = [ys < box.y0.view(n, 1, 1) + 3, ys >= box.y1.view(n, 1, 1) - 3,
            xs < box.x0.view(n, 1, 1) + 3, xs >= box.x1.view(n, 1, 1) - 3]
    within_one_band = torch.stack([(gone & ~band).flatten(1).any(1) == 0 for band in near], 1).any(1)
    assert within_one_band.all()  # only pixels within 3 px of one side of the ink box are cut
    assert gone.flatten(1).any(1).float().mean() > 0.8  # all but the narrowest digits lose something


# ---------------------------------------------------------------------------------------------- styles

def added(before, after):
    return (after - before).clamp_min(0)[:, 0]


def rows_and_columns(x):
    return torch.arange(x.shape[-2], dtype=torch.float32).view(-1, 1), torch.arange(x.shape[-1], dtype=torch.float32)


def test_flag_goes_down_left_from_the_top_of_a_one(digits):
    ones = canvas(of_digit(digits, 1)[0])
    shape = A.measure(ones)
    new = added(ones, A.flagged_one(ones, gen(), p_foot=0.0))
    ys, xs = rows_and_columns(ones)
    mass = new.sum((1, 2))
    below_top = (new * (ys >= shape.top.view(-1, 1, 1) - 1)).sum((1, 2))
    upper_half = (new * (ys <= (shape.top + shape.height / 2).view(-1, 1, 1))).sum((1, 2))
    left_of_stem = (new * (xs <= shape.top_x.view(-1, 1, 1) + 0.5)).sum((1, 2))
    assert (mass > 1.5).all()  # a stroke several pixels long on every 1
    assert (below_top / mass > 0.99).all() and (upper_half / mass > 0.9).all() and (left_of_stem / mass > 0.85).all()


def test_foot_adds_ink_under_the_stem(digits):
    ones = canvas(of_digit(digits, 1)[0])
    shape = A.measure(ones)
    with_foot = added(ones, A.flagged_one(ones, gen(), p_foot=1.0))
    without = added(ones, A.flagged_one(ones, gen(), p_foot=0.0))
    ys, _ = rows_and_columns(ones)
    bottom_rows = (ys >= (shape.bottom - 3).view(-1, 1, 1)).float()
    assert ((with_foot * bottom_rows).sum((1, 2)) > (without * bottom_rows).sum((1, 2)) + 1.0).all()


def test_crossbar_goes_across_the_middle_of_a_seven(digits):
    sevens = canvas(of_digit(digits, 7)[0])
    shape = A.measure(sevens)
    new = added(sevens, A.crossed_seven(sevens, gen()))
    ys, _ = rows_and_columns(sevens)
    relative = (ys - shape.top.view(-1, 1, 1)) / shape.height.view(-1, 1, 1)  # 0 = top row, 1 = bottom row
    middle = (new * ((relative > 0.3) & (relative < 0.75))).sum((1, 2))
    assert (new.sum((1, 2)) > 1.0).all()
    assert (middle / new.sum((1, 2)) > 0.98).all()


def test_curl_adds_ink_at_the_bottom_of_a_nine(digits):
    nines = canvas(of_digit(digits, 9)[0])
    shape = A.measure(nines)
    new = added(nines, A.curled_nine(nines, gen()))
    ys, _ = rows_and_columns(nines)
    low = (new * (ys >= (shape.top + 0.6 * shape.height).view(-1, 1, 1))).sum((1, 2))
    assert (new.sum((1, 2)) > 1.0).all()
    assert (low / new.sum((1, 2)) > 0.95).all()


def test_open_four_is_a_four_of_the_same_height_with_its_bar_low_and_only_its_stem_below(digits):
    fours = canvas(of_digit(digits, 4)[0])
    redrawn = A.open_four(fours, gen())
    before, after = A.measure(fours), A.measure(redrawn)
    redrawn = redrawn[:, 0]
    ys, xs = rows_and_columns(fours)
    relative = (ys - after.top.view(-1, 1, 1)) / after.height.view(-1, 1, 1)
    assert ((after.top - before.top).abs() <= 1).all() and ((after.bottom - before.bottom).abs() <= 1).all()
    bar_row = (redrawn * (redrawn > A.STROKE_LEVEL)).sum(2).argmax(1).float()
    bar_at = (bar_row - after.top) / after.height
    assert ((bar_at > 0.45) & (bar_at < 0.8)).all()
    low_columns = ((redrawn * (relative > 0.85)).amax(1) > A.STROKE_LEVEL).sum(1)
    assert (low_columns <= after.stroke + 3).all()  # the stem alone reaches the bottom
    box = A.ink_box(redrawn[:, None], A.STROKE_LEVEL)
    centre = ((box.x0 + box.x1 - 1) / 2).view(-1, 1, 1)
    above_bar = redrawn * (relative < 0.4)  # the back and the stem: ink on both sides
    assert ((above_bar * (xs < centre)).sum((1, 2)) > 1.0).all() and ((above_bar * (xs > centre)).sum((1, 2)) > 1.0).all()


def test_open_fours_redraw_only_fours(digits):
    x, y = canvas(digits[0]), digits[1]
    changed = (A.open_fours(x, y, gen(), p=1.0) != x).flatten(1).any(1)
    assert torch.equal(changed, y == 4)


def test_styles_touch_only_ones_sevens_and_nines(digits):
    x, y = canvas(digits[0]), digits[1]
    styled = A.styles(x, y, gen(), p=1.0)
    changed = (styled != x).flatten(1).any(1)
    assert torch.equal(changed, torch.isin(y, torch.tensor([1, 7, 9])))
    for digit, redraw in [(1, lambda b: A.flagged_one(b, gen(), 0.3)), (7, lambda b: A.crossed_seven(b, gen())),
                          (9, lambda b: A.curled_nine(b, gen()))]:
        mine = y == digit  # the batched pass draws what each digit's own style draws (other random numbers)
        alone = redraw(x[mine])
        assert (ink_mass(styled[mine]) - ink_mass(x[mine])).mean() == pytest.approx(
            (ink_mass(alone) - ink_mass(x[mine])).mean(), rel=0.35)


# ---------------------------------------------------------------------------------------------- refit

def transformed(digits, seed=0):
    """Digits varied in every way the recipe varies them, on the larger canvas, before refit."""
    x, y = digits
    g = gen(seed)
    c = A.styles(canvas(x), y, g, p=0.5)
    c = A.warp(c, g, 0.3, 0.25, 24.0, 4.0, 0.6, 0.6, 0.5)
    c = A.partial_crop(c, g, p=0.3)
    return A.stroke_width(c, g, p=0.5)


def test_refit_frames_as_fit_to_mnist(digits, pretrained):
    c = transformed(digits)
    ours = A.refit(c)[:, 0].numpy()
    ink = c[:, 0].numpy()
    # fit_to_mnist sees ink as ink_map leaves it: no faint resampling fringe.
    reference = np.stack([fit_to_mnist(np.where(image > A.INK_LEVEL, image, 0)) for image in ink])
    assert ours.shape == (300, 28, 28)
    assert np.abs(ours - reference).mean() < 1e-4
    assert np.abs(ours - reference).max() < 0.02
    # With the fringe left in, fit_to_mnist's box grows by about a pixel: still the same digit to the model.
    with_fringe = np.stack([fit_to_mnist(image) for image in ink])
    assert np.abs(ours - with_fringe).mean() < 0.03
    with torch.no_grad():
        read = [pretrained.model(torch.as_tensor(a).unsqueeze(1)).argmax(1) for a in (ours, reference, with_fringe)]
    assert (read[0] == read[1]).float().mean() >= 0.98
    assert (read[0] == read[2]).float().mean() >= 0.98


def test_refit_output_is_in_the_mnist_framing(digits):
    out = A.refit(transformed(digits, seed=3))
    box = A.ink_box(out)
    longer = torch.maximum(box.y1 - box.y0, box.x1 - box.x0)
    assert (longer <= 20).all() and (longer >= 19).float().mean() > 0.95  # faint edge pixels may fall under the level
    index = torch.arange(28.0)
    mass = out[:, 0].sum((1, 2))
    cy, cx = out[:, 0].sum(2) @ index / mass, out[:, 0].sum(1) @ index / mass
    assert (cy - 14).abs().max() <= 0.75 and (cx - 14).abs().max() <= 0.75


def test_refit_of_nothing_is_nothing():
    assert torch.equal(A.refit(torch.zeros(2, 1, 36, 36)), torch.zeros(2, 1, 28, 28))


def test_refit_keeps_mnist_digits_as_they_are(digits):
    x = digits[0]
    same = (A.refit(x) - x * (x > A.INK_LEVEL)).abs().flatten(1).amax(1) < 1e-5
    assert same.float().mean() > 0.97  # the rest: faint edge pixels under INK_LEVEL shrank the box, so it is resized


# ---------------------------------------------------------------------------------------------- recipes

def original_random_affine(x, generator, degrees=10.0, scale=0.1, shift=2.0 / 28):
    """train.random_affine as it was before augment.py existed: the presets' seeded results depend on it."""
    n = x.shape[0]

    def uniform(limit):
        return (torch.rand(n, generator=generator, device=x.device) * 2 - 1) * limit

    angle = uniform(math.radians(degrees))
    zoom = 1 + uniform(scale)
    tx, ty = uniform(2 * shift), uniform(2 * shift)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def test_affine_recipe_is_the_original_random_affine_bit_for_bit(digits):
    x, y = digits
    ours, theirs = gen(7), gen(7)
    assert torch.equal(A.augment_batch(x, y, ours, "affine"), original_random_affine(x, theirs))
    assert torch.equal(ours.get_state(), theirs.get_state())  # the next batch draws the same numbers too
    assert random_affine is A.random_affine
    assert TrainConfig().augment_recipe == "affine"


def test_writers_recipe_changes_about_p_writer_of_the_batch_and_frames_them(mnist):
    x = torch.as_tensor(mnist.train_images[:1000]).float().div(255).unsqueeze(1)
    y = torch.as_tensor(mnist.train_labels[:1000]).long()
    recipe = A.Recipe(**{**A.RECIPES["writers"].to_dict(), "p_affine": 0.0})
    out = A.augment_batch(x, y, gen(), recipe)
    kept = (out == x).flatten(1).all(1)
    assert abs(kept.float().mean().item() - (1 - recipe.p_writer)) < 0.05
    box = A.ink_box(out[~kept])
    assert (torch.maximum(box.y1 - box.y0, box.x1 - box.x0) <= 20).all()
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_styles_recipe_redraws_some_1s_7s_and_9s_and_nothing_else(mnist):
    x = torch.as_tensor(mnist.train_images[:2000]).float().div(255).unsqueeze(1)
    y = torch.as_tensor(mnist.train_labels[:2000]).long()
    styles = A.Recipe(**{**A.RECIPES["styles"].to_dict(), "p_affine": 0.0})
    out = A.augment_batch(x, y, gen(), styles)
    reference = A.augment_batch(x, y, gen(), replace(styles, p_style=0.0))  # the same batch, framed alike
    redrawn = (out != reference).flatten(1).any(1)
    styled_class = torch.isin(y, torch.tensor(A.STYLED_DIGITS))
    assert not redrawn[~styled_class].any()
    assert abs(redrawn[styled_class].float().mean().item() - styles.p_writer * styles.p_style) < 0.05


def test_a_recipe_with_open_fours_redraws_some_4s_and_nothing_else(mnist):
    x = torch.as_tensor(mnist.train_images[:2000]).float().div(255).unsqueeze(1)
    y = torch.as_tensor(mnist.train_labels[:2000]).long()
    fours = A.Recipe(p_affine=0.0, p_writer=0.5, p_open_four=0.6)
    out = A.augment_batch(x, y, gen(), fours)
    reference = A.augment_batch(x, y, gen(), replace(fours, p_open_four=0.0))
    redrawn = (out != reference).flatten(1).any(1)
    assert not redrawn[y != 4].any()
    assert abs(redrawn[y == 4].float().mean().item() - fours.p_writer * fours.p_open_four) < 0.06


def test_writers_recipe_is_seeded(digits):
    x, y = digits
    assert torch.equal(A.augment_batch(x, y, gen(3), "writers"), A.augment_batch(x, y, gen(3), "writers"))
    assert not torch.equal(A.augment_batch(x, y, gen(3), "writers"), A.augment_batch(x, y, gen(4), "writers"))


def test_recipes_are_json_and_round_trip():
    for name, recipe in A.RECIPES.items():
        values = json.loads(json.dumps(recipe.to_dict()))
        assert A.recipe_named(values) == recipe == A.recipe_named(name)


@pytest.mark.parametrize("recipe, message", [
    ("heavy", r"unknown augmentation recipe 'heavy' \(choose from affine, writers, styles\)"),
    ({"p_flag": 0.5}, "augmentation recipe has no field p_flag"),
    ({"p_style": 1.5}, r"p_style is a probability \(0 to 1\), got 1.5"),
    ({"slant": -0.1}, "slant must be a number >= 0, got -0.1"),
])
def test_bad_recipes_are_rejected(recipe, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(augment=True, augment_recipe=recipe)


# ---------------------------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def small(mnist):
    return mnist.train_images[:1200], mnist.train_labels[:1200]


def _weights_after_one_epoch(small, **config):
    torch.manual_seed(0)
    model = build_model("cnn-fast")
    fit(model, *small, TrainConfig(epochs=1, batch_size=100, validation_split=0.0, progress=False, **config))
    return model.state_dict()


def test_affine_training_is_unchanged(small, monkeypatch):
    now = _weights_after_one_epoch(small, augment=True)
    import mnist_classifier.train as train

    monkeypatch.setattr(train, "augment_batch", lambda x, y, g, recipe: original_random_affine(x, g))
    before = _weights_after_one_epoch(small, augment=True)
    for name in now:
        assert torch.equal(now[name], before[name]), name


def test_training_with_the_writers_recipe_runs_and_is_seeded(small):
    a = _weights_after_one_epoch(small, augment=True, augment_recipe="writers")
    b = _weights_after_one_epoch(small, augment=True, augment_recipe="writers")
    affine = _weights_after_one_epoch(small, augment=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], affine[k]) for k in a)


def test_model_file_records_the_recipe_values(mnist, tmp_path):
    from mnist_classifier.persist import read_metadata

    data = SimpleNamespace(train_images=mnist.train_images[:600], train_labels=mnist.train_labels[:600],
                           test_images=mnist.test_images[:200], test_labels=mnist.test_labels[:200], sha256="x")
    config = TrainConfig(epochs=1, batch_size=100, validation_split=0.0, progress=False, augment=True,
                         augment_recipe="writers")
    result = train_architecture("cnn-fast", data, config)
    path = save_result(result, tmp_path / "m.safetensors", "x")
    training = read_metadata(path)["training"]
    assert training["augment_recipe"] == "writers"
    assert training["augment_recipe_values"] == A.RECIPES["writers"].to_dict()
    assert TrainConfig.from_dict(training).augment_recipe == "writers"
