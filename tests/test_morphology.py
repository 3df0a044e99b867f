"""The ink pipeline's labelling and morphology against scipy.ndimage, their oracle."""
import numpy as np
import pytest
from scipy import ndimage

from mnist_classifier.morphology import box_blur, boxes_of, grey_opening, label, max_of_neighbours, runs_along_rows, spread_along_rows

_EIGHT = np.ones((3, 3), dtype=bool)
_STACKED_EIGHT = np.zeros((3, 3, 3), dtype=bool)
_STACKED_EIGHT[1] = True


def _blotches(rng, shape, density):
    """Random blobs of many shapes: thresholded smoothed noise."""
    return ndimage.uniform_filter(rng.random(shape), size=[1] * (len(shape) - 2) + [3, 3]) > 1 - density


def _boxes_from_slices(slices) -> np.ndarray:
    return np.array([(s[-1].start, s[-2].start, s[-1].stop, s[-2].stop) for s in slices]).reshape(-1, 4)


@pytest.mark.parametrize("shape", [(28, 28), (240, 640), (1, 1), (5, 300), (300, 5)])
@pytest.mark.parametrize("density", [0.0, 0.2, 0.5, 1.0])
def test_labels_and_boxes_of_an_image_are_scipys(shape, density):
    binary = _blotches(np.random.default_rng(sum(shape)), shape, density)
    expected, count = ndimage.label(binary, structure=_EIGHT)
    blobs = label(binary)
    assert blobs.count == count and blobs.labels.dtype == np.int32
    np.testing.assert_array_equal(blobs.labels, expected)
    np.testing.assert_array_equal(blobs.boxes, _boxes_from_slices(ndimage.find_objects(expected)))


@pytest.mark.parametrize("n, height, width", [(1, 28, 28), (64, 28, 28), (7, 40, 90), (3, 1, 12)])
def test_a_stack_is_labelled_as_scipy_labels_it_with_ids_running_on_and_boxes_in_each_image(n, height, width):
    stack = _blotches(np.random.default_rng(n + height), (n, height, width), 0.4)
    stack[:, 0], stack[:, -1] = True, True  # ink along the top and bottom rows, touching the next image's
    expected, count = ndimage.label(stack, structure=_STACKED_EIGHT)
    blobs = label(stack)
    assert blobs.count == count
    np.testing.assert_array_equal(blobs.labels, expected)
    np.testing.assert_array_equal(blobs.boxes, _boxes_from_slices(ndimage.find_objects(expected)))


def test_an_empty_stack_has_no_blobs():
    blobs = label(np.zeros((0, 28, 28), dtype=bool))
    assert blobs.count == 0 and blobs.labels.shape == (0, 28, 28) and blobs.boxes.shape == (0, 4)


def test_boxes_of_a_labelled_image_are_scipys_find_objects_with_missing_labels_empty():
    labels, count = ndimage.label(_blotches(np.random.default_rng(5), (60, 80), 0.3), structure=_EIGHT)
    labels[labels == 2] = 0  # label 2 has no pixels left
    expected = [s if s is not None else (slice(0, 0), slice(0, 0)) for s in ndimage.find_objects(labels, count)]
    np.testing.assert_array_equal(boxes_of(labels, count), _boxes_from_slices(expected))
    assert boxes_of(labels, count)[1].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("shape", [(64, 64), (40, 64), (64, 23), (12, 9), (3, 3)])
@pytest.mark.parametrize("side", [3, 4, 5, 15, 16])
def test_grey_opening_and_box_blur_are_scipys_with_nearest_edges(shape, side):
    image = np.random.default_rng(side).random(shape).astype(np.float32)
    np.testing.assert_array_equal(grey_opening(image, side),
                                  ndimage.grey_opening(image, size=(side, side), mode="nearest"))
    np.testing.assert_allclose(box_blur(image, side), ndimage.uniform_filter(image, size=side, mode="nearest"),
                               atol=1e-6)


@pytest.mark.parametrize("length", [1, 3, 9, 25, 120])
def test_runs_and_spread_along_rows_are_scipys_for_images_stacks_and_transposed_views(length):
    rng = np.random.default_rng(length)
    stack = rng.random((3, 40, 90)) > rng.uniform(0.1, 0.5, size=(3, 40, 1))
    line = np.ones((1, 1, length), bool)
    opened = ndimage.binary_opening(stack, structure=line)
    spread = ndimage.maximum_filter1d(stack.view(np.uint8), length, axis=2, origin=(length - 1) // 2,
                                      mode="constant") > 0
    np.testing.assert_array_equal(runs_along_rows(stack, length), opened)
    np.testing.assert_array_equal(runs_along_rows(stack[1], length), opened[1])
    np.testing.assert_array_equal(spread_along_rows(stack, length), spread)
    columns = np.swapaxes(stack, 1, 2)  # the runs along the columns of each image
    np.testing.assert_array_equal(runs_along_rows(columns, length),
                                  np.swapaxes(ndimage.binary_opening(stack, structure=line.reshape(1, length, 1)), 1, 2))
    assert runs_along_rows(np.zeros((0, 5), bool), length).shape == (0, 5)


@pytest.mark.parametrize("top", [9, 70000])  # OpenCV's 16-bit path, and numpy's beyond it
def test_max_of_neighbours_is_scipys_maximum_filter_within_each_image(top):
    rng = np.random.default_rng(top)
    labels = np.where(rng.random((4, 30, 50)) < 0.2, rng.integers(1, top, size=(4, 30, 50)), 0).astype(np.int32)
    expected = ndimage.maximum_filter(labels, size=(1, 3, 3), mode="constant", cval=0)
    got = max_of_neighbours(labels)
    assert got.dtype == labels.dtype
    np.testing.assert_array_equal(got, expected)
