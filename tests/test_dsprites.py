"""dSprites drawn from its factors: each factor changes the image as it should.

The published grid (sizes, ranges, order) is checked as numbers; the images on dSprites' own
64-pixel grid, a few tuples at a time, and on small grids where a test sweeps every tuple.
"""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from numpy_vae.training.data import Dataset
from numpy_vae.training.dsprites import (
    DSPRITES,
    MARGIN,
    RADIUS,
    FactorGrid,
    batches,
    dsprites_dataset,
    factor_value_images,
    plot_factor_values,
    render,
)

SMALL = FactorGrid(shapes=3, scales=3, orientations=8, positions_x=4, positions_y=3, image_size=32)

# Each shape's area at radius 1 in its own frame: the square of half-side 1, the ellipse of
# semi-axes 1 and 1/2, and the heart (area 3.6601 of (x^2 + y^2 - 1)^3 <= x^2 y^3, integrated
# on a fine grid, over 1.1385^2 for its rescaling to a bounding box of half-width 1).
UNIT_AREAS = (4.0, np.pi / 2, 3.6601 / 1.1385**2)

tuples = st.tuples(*(st.integers(0, n - 1) for n in DSPRITES.sizes))


def area(images: np.ndarray) -> np.ndarray:
    """White pixels of each image."""
    return (images > 0).sum(axis=(1, 2))


def centroid(images: np.ndarray) -> np.ndarray:
    """(column, row) of each image's white pixels' mean, in pixels from the top left corner."""
    white = (images > 0).astype(np.float64)
    side = images.shape[-1]
    cols = (white.sum(axis=1) * np.arange(side)).sum(axis=1) / white.sum(axis=(1, 2))
    rows = (white.sum(axis=2) * np.arange(side)).sum(axis=1) / white.sum(axis=(1, 2))
    return np.stack([cols, rows], axis=1)


def test_the_published_grid():
    assert DSPRITES.sizes == (3, 6, 40, 32, 32)
    assert DSPRITES.n_images == 737_280 and DSPRITES.image_size == 64
    np.testing.assert_allclose(DSPRITES.values(1), [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    orientations = DSPRITES.values(2)
    assert orientations[0] == 0 and orientations[-1] < 2 * np.pi
    np.testing.assert_allclose(np.diff(orientations), 2 * np.pi / 40)
    for k in (3, 4):
        positions = DSPRITES.values(k)
        assert len(positions) == 32 and positions[0] == 0 and positions[-1] == 1


@given(st.lists(tuples, min_size=1, max_size=20))
def test_index_and_factors_are_inverse_and_the_last_factor_varies_fastest(factor_list):
    factors = np.array(factor_list, dtype=np.int64)
    index = DSPRITES.index(factors)
    np.testing.assert_array_equal(DSPRITES.factors(index), factors)
    assert DSPRITES.index(np.array([[0, 0, 0, 0, 1]]))[0] == 1
    assert DSPRITES.index(np.array([[1, 0, 0, 0, 0]]))[0] == 6 * 40 * 32 * 32


@given(st.lists(tuples, min_size=1, max_size=6))
def test_an_image_depends_on_its_tuple_alone(factor_list):
    """Deterministic: a tuple drawn alone, in a batch, or split across chunks, is one image."""
    factors = np.array(factor_list, dtype=np.int64)
    together = render(factors, chunk=4)
    for tuple_, image in zip(factors, together, strict=True):
        np.testing.assert_array_equal(render(tuple_[None])[0], image)
    assert together.dtype == np.uint8 and set(np.unique(together)) <= {0, 255}


@given(tuples)
@example((0, 5, 4, 0, 0))  # the largest square at 36 degrees in the corner: a border pixel
def test_every_shape_lies_inside_the_image_and_is_not_empty(tuple_):
    """No shape at any scale, orientation and position reaches past the border. Every shape
    lies in the square [-1, 1]^2 of its own frame, so within ``sqrt(2) r`` of its centre, and
    that disc lies inside the image (MARGIN >= sqrt(2) RADIUS): every white pixel's centre lies
    in it. (A white pixel on the outermost row is allowed: its centre is half a pixel inside
    the border, and the largest square turned by 36 degrees reaches 0.28 pixels from it.)"""
    image = render(np.array([tuple_]))[0]
    assert image.any()
    values = DSPRITES.factor_values(np.array([tuple_]))[0]
    reach = np.sqrt(2) * RADIUS * values[1]  # the disc around the centre, as a fraction of a side
    c = MARGIN + (1 - 2 * MARGIN) * values[3:5]  # (x, y), y down the rows
    assert np.all(c - reach >= 0) and np.all(c + reach <= 1)
    rows, cols = np.nonzero(image)
    side = DSPRITES.image_size
    distance = np.hypot((cols + 0.5) / side - c[0], (rows + 0.5) / side - c[1])
    assert distance.max() <= reach * (1 + 1e-12)


def test_every_shape_lies_in_the_unit_square_of_its_own_frame():
    """The premise of the test above: outside max(|p|, |q|) <= 1 no shape has a point."""
    from numpy_vae.training.dsprites import SHAPES

    p, q = np.meshgrid(np.linspace(-3, 3, 601), np.linspace(-3, 3, 601))
    outside = np.maximum(np.abs(p), np.abs(q)) > 1
    for inside in SHAPES:
        assert not inside(p[outside], q[outside]).any(), inside.__name__


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_area_grows_with_scale_as_its_square(shape):
    """Area strictly increases along the six scales, and is ``unit area * (RADIUS S s)^2``
    within the pixels along the outline."""
    rng = np.random.default_rng(shape)
    for _ in range(5):
        factors = np.tile([shape, 0, *(rng.integers(0, n) for n in (40, 32, 32))], (6, 1))
        factors[:, 1] = np.arange(6)
        pixels = area(render(factors))
        assert (np.diff(pixels) > 0).all(), pixels
        radius = RADIUS * DSPRITES.values(1) * DSPRITES.image_size
        expected = UNIT_AREAS[shape] * radius**2
        outline = 8 * radius  # about one pixel along a perimeter of at most 8 radii
        assert (np.abs(pixels - expected) < outline).all(), (pixels, expected)


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_the_centroid_follows_the_position(shape):
    """Moving the position moves the centroid by the same number of pixels, in x along the
    columns and in y down the rows, within a pixel (rasterization)."""
    step = (1 - 2 * MARGIN) * DSPRITES.image_size / 31  # pixels per position step
    for k, axis in ((3, 0), (4, 1)):
        factors = np.tile([shape, 5, 7, 16, 16], (32, 1))
        factors[:, k] = np.arange(32)
        moved = centroid(render(factors))
        shift = moved[:, axis] - moved[0, axis]
        np.testing.assert_allclose(shift, step * np.arange(32), atol=1.0)
        other = moved[:, 1 - axis]
        assert np.ptp(other) < 1.0  # the other coordinate stays put
    if shape < 2:  # the square and the ellipse are symmetric about their centre
        side = DSPRITES.image_size  # position (1, 0): the right, top corner of the range
        centre = np.array([(1 - MARGIN) * side - 0.5, MARGIN * side - 0.5])  # pixel indices
        corner = centroid(render(np.array([[shape, 5, 7, 31, 0]])))[0]
        np.testing.assert_allclose(corner, centre, atol=0.5)


def test_a_quarter_turn_maps_the_square_onto_itself_and_not_the_heart():
    """Orientation k + 10 is k turned by 2 pi / 4: the same square, within a pixel or two of
    round-off on the outline; a different heart (it has no fourfold symmetry) and a different
    ellipse (only twofold: a half turn, k + 20, maps it onto itself)."""
    rng = np.random.default_rng(0)
    base = np.stack([rng.integers(0, n, 40) for n in DSPRITES.sizes], axis=1)
    base[:, 2] = rng.integers(0, 10, 40)
    turned = base.copy()
    turned[:, 2] += 10
    half = base.copy()
    half[:, 2] += 20
    for shape, quarter_same, half_same in ((0, True, True), (1, False, True), (2, False, False)):
        base[:, 0] = turned[:, 0] = half[:, 0] = shape
        a, b, c = render(base) > 0, render(turned) > 0, render(half) > 0
        for other, same in ((b, quarter_same), (c, half_same)):
            changed = (a != other).sum(axis=(1, 2))
            if same:
                assert (changed <= 2).all(), changed
            else:
                assert (changed > 0.1 * a.sum(axis=(1, 2))).all(), changed


def test_the_heart_is_mirror_symmetric_at_orientation_zero():
    """The procedural heart's axis is vertical: mirrored left to right about its centre it is
    the same shape (the centre on a pixel edge, so the mirror maps pixels onto pixels)."""
    grid = FactorGrid(image_size=60, positions_x=3, positions_y=3)  # centre at 30 = a pixel edge
    image = render(np.array([[2, 5, 0, 1, 1]]), grid)[0]
    np.testing.assert_array_equal(image, image[:, ::-1])
    assert not np.array_equal(image, image[::-1])


def test_batches_visit_every_tuple_once():
    seen = np.concatenate([SMALL.index(f) for f, _ in batches(SMALL, 50, np.random.default_rng(0))])
    np.testing.assert_array_equal(np.sort(seen), np.arange(SMALL.n_images))
    factors, images = next(batches(SMALL, 7))
    np.testing.assert_array_equal(SMALL.index(factors), np.arange(7))
    assert images.shape == (7, 32, 32)


def test_small_grids_keep_the_ranges():
    np.testing.assert_allclose(SMALL.values(1), [0.5, 0.75, 1.0])
    np.testing.assert_allclose(SMALL.values(2), np.arange(8) * np.pi / 4)
    np.testing.assert_allclose(SMALL.values(4), [0, 0.5, 1])
    assert SMALL.n_images == 3 * 3 * 8 * 4 * 3


def test_bad_factors_are_refused():
    with pytest.raises(ValueError, match="integer array"):
        render(np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="0..size-1"):
        render(np.array([[3, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="shapes"):
        FactorGrid(shapes=4)


def test_the_dataset_feeds_the_trainer_convention():
    dataset, train_factors, test_factors = dsprites_dataset(SMALL, 600, 264, seed=1)
    assert isinstance(dataset, Dataset) and not dataset.labelled
    assert dataset.train_images.shape == (600, 32 * 32)
    assert dataset.test_images.shape == (264, 32 * 32)
    assert set(np.unique(dataset.train_images)) == {0, 255}
    both = np.concatenate([SMALL.index(train_factors), SMALL.index(test_factors)])
    assert len(np.unique(both)) == SMALL.n_images  # distinct tuples: all 864 of them
    np.testing.assert_array_equal(
        dataset.test_images[:5], render(test_factors[:5], SMALL).reshape(5, -1)
    )
    with pytest.raises(ValueError, match="at most"):
        dsprites_dataset(SMALL, 600, 265)


def test_one_image_per_factor_value(tmp_path):
    rows = factor_value_images(SMALL)
    assert [len(r) for r in rows] == list(SMALL.sizes)
    for row in rows[1:]:  # each value of a factor is a different image
        flat = row.reshape(len(row), -1)
        assert len(np.unique(flat, axis=0)) == len(row)
    path = tmp_path / "factors.png"
    plot_factor_values(SMALL, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
