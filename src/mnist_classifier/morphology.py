"""The image operations under the ink pipeline: 8-connected blobs with their boxes, a flat grey opening, a
box blur, the maximum over each pixel's neighbours, and the runs of a mask along its rows, on OpenCV.

They give scipy.ndimage's results (``label`` with a 3x3 structure, ``find_objects``, ``grey_opening`` and
``uniform_filter`` with ``mode="nearest"``, ``maximum_filter``, and ``binary_opening`` and
``maximum_filter1d`` along rows; the tests hold them to it), for a fraction of its cost: OpenCV imports in
a small part of the time scipy.ndimage takes, which is most of a one-image ``predict``'s start-up, its
labelling hands back every blob's box with the labels, and its erosions and dilations along a line are
single passes where numpy needs one whole-array operation per doubling of the line.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from .fit import ink_box

# A scan in raster order, as scipy numbers its blobs: ids then run on from one image of a stack to the next.
_RASTER_ORDER = cv2.CCL_SAUF


class Blobs(NamedTuple):
    """The labels (0 = background, blobs 1..count) and each blob's box as (x0, y0, x1, y1), stops exclusive,
    in its own image's coordinates (row k-1 for blob k)."""
    labels: np.ndarray
    count: int
    boxes: np.ndarray


def label(binary: np.ndarray) -> Blobs:
    """The 8-connected blobs of one (H, W) image or of each image of an (N, H, W) stack, never joined across
    images: the stack is labelled as one tall image, one empty row under each image keeping them apart.

    Only the rows and columns that hold a pixel in some image are labelled: OpenCV's cost is per pixel
    (it gathers the background's statistics too), and ink is most often a small part of an image. Empty
    rows and columns change no blob and no blob's place in raster order."""
    if binary.ndim == 2:
        blobs = label(binary[None])
        return Blobs(blobs.labels[0], blobs.count, blobs.boxes)
    labels = np.zeros(binary.shape, dtype=np.int32)
    box = ink_box(binary.any(axis=0))
    if box is None:
        return Blobs(labels, 0, np.zeros((0, 4), dtype=np.int32))
    left, top, right, bottom = box
    window = (slice(None), slice(top, bottom), slice(left, right))
    count, found, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        _tall(binary[window], np.uint8), 8, cv2.CV_32S, _RASTER_ORDER)
    x0, y0, wide, high = (stats[1:, k] for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP,
                                                  cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
    x0, y0 = x0 + left, y0 % (bottom - top + 1) + top
    labels[window] = _untall(found, len(binary))
    return Blobs(labels, count - 1, np.stack([x0, y0, x0 + wide, y0 + high], axis=1).astype(np.int32))


def boxes_of(labels: np.ndarray, count: int) -> np.ndarray:
    """(x0, y0, x1, y1) of each label 1..count of a labelled (H, W) image (scipy's find_objects as an array);
    a label with no pixels gets an empty box (0, 0, 0, 0).

    The labelled pixels are looked for in the rows and columns that hold one: a blob is most often a small
    part of its image, and finding nonzero pixels costs per pixel searched."""
    boxes = np.zeros((count, 4), dtype=np.intp)
    box = ink_box(labels)
    if box is None:
        return boxes
    left, top, right, bottom = box
    ys, xs = np.nonzero(labels[top:bottom, left:right])
    ys, xs = ys + top, xs + left
    ids = labels[ys, xs] - 1
    present = np.bincount(ids, minlength=count) > 0
    for column, coords, reduce, start in ((0, xs, np.minimum, labels.shape[1]), (1, ys, np.minimum, labels.shape[0]),
                                          (2, xs + 1, np.maximum, 0), (3, ys + 1, np.maximum, 0)):
        out = np.full(count, start, dtype=np.intp)
        reduce.at(out, ids, coords)
        boxes[:, column] = np.where(present, out, 0)
    return boxes


def grey_opening(image: np.ndarray, side: int) -> np.ndarray:
    """A grey opening with a flat side x side square, edges repeating the border pixel."""
    square = np.ones((side, side), dtype=np.uint8)
    eroded = cv2.erode(image, square, borderType=cv2.BORDER_REPLICATE)
    # scipy centres an even square one pixel differently for the dilation that undoes the erosion.
    centre = (side - 1) // 2 if side % 2 == 0 else side // 2
    return cv2.dilate(eroded, square, anchor=(centre, centre), borderType=cv2.BORDER_REPLICATE)


def box_blur(image: np.ndarray, side: int) -> np.ndarray:
    """The mean over a side x side square around each pixel, edges repeating the border pixel."""
    return cv2.blur(image, (side, side), borderType=cv2.BORDER_REPLICATE)


def max_of_neighbours(labels: np.ndarray) -> np.ndarray:
    """Each pixel's maximum over its 3x3 neighbourhood inside its own image, for each image of an (N, H, W)
    stack of blob labels (whole numbers from 0; scipy's maximum_filter of size (1, 3, 3)).

    The stack is one tall image with an empty row under each image, as in ``label``: a neighbour of 0
    changes no maximum of labels, so images never reach into each other."""
    if labels.size == 0 or labels.max() >= 1 << 16:  # OpenCV dilates 16-bit images, not 32-bit ones
        return _max_of_neighbours_numpy(labels)
    grown = cv2.dilate(_tall(labels, np.uint16), np.ones((3, 3), np.uint8),
                       borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return _untall(grown, len(labels)).astype(labels.dtype)


def _tall(stack: np.ndarray, dtype) -> np.ndarray:
    """An (N, H, W) stack as one (N * (H + 1), W) image, an empty row under each image keeping them apart."""
    n, height, width = stack.shape
    tall = np.zeros((n, height + 1, width), dtype=dtype)
    tall[:, :height] = stack
    return tall.reshape(n * (height + 1), width)


def _untall(tall: np.ndarray, n: int) -> np.ndarray:
    """The (N, H, W) stack of a tall image made by ``_tall``, its separating rows left out."""
    return tall.reshape(n, -1, tall.shape[1])[:, :-1]


def _max_of_neighbours_numpy(stack: np.ndarray) -> np.ndarray:
    out = stack.copy()
    np.maximum(out[:, 1:], stack[:, :-1], out=out[:, 1:])
    np.maximum(out[:, :-1], stack[:, 1:], out=out[:, :-1])
    rows = out.copy()
    np.maximum(out[:, :, 1:], rows[:, :, :-1], out=out[:, :, 1:])
    np.maximum(out[:, :, :-1], rows[:, :, 1:], out=out[:, :, :-1])
    return out


def runs_along_rows(mask: np.ndarray, length: int) -> np.ndarray:
    """Pixels of a bool mask on a run of at least ``length`` along its last axis: a binary opening with a
    1 x length line, nothing beyond the ends. Any number of leading axes (a stack of images, or a
    transposed view: the rows of one image are the columns of the other)."""
    if mask.size == 0:
        return np.zeros(mask.shape, dtype=bool)
    starts = cv2.erode(_rows_as_bytes(mask), np.ones((1, length), np.uint8), anchor=(0, 0),
                       borderType=cv2.BORDER_CONSTANT, borderValue=0)  # starts[x]: mask[x:x + length] all set
    return _spread(starts, length).view(bool).reshape(mask.shape)


def spread_along_rows(mask: np.ndarray, length: int) -> np.ndarray:
    """out[x] = any(mask[x - length + 1:x + 1]) along the last axis of a bool mask."""
    if mask.size == 0:
        return np.zeros(mask.shape, dtype=bool)
    return _spread(_rows_as_bytes(mask), length).view(bool).reshape(mask.shape)


def _spread(rows: np.ndarray, length: int) -> np.ndarray:
    return cv2.dilate(rows, np.ones((1, length), np.uint8), anchor=(length - 1, 0),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0)


def _rows_as_bytes(mask: np.ndarray) -> np.ndarray:
    """A bool mask as one uint8 image of all its rows (OpenCV takes 2-D arrays; the runs stay within rows)."""
    return np.ascontiguousarray(mask, dtype=bool).view(np.uint8).reshape(-1, mask.shape[-1])
