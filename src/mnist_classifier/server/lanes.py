"""Two lanes for images, by what decoding them will cost, so that a few huge images cannot stall many small ones.

An image's cost is its pixel count, which its header states: Pillow opens an image lazily, reading the
header and none of the pixels. Reading the header of the first PROBE_BYTES only keeps the look itself
cheap, whatever the file holds.

    small (at most LIGHT_PIXELS)    the inference thread, micro-batched with the others: a few milliseconds
    large, or header not found      the heavy lane: its own thread, one request's large images at a time
                                    and at most HEAVY_SLOTS requests waiting or running (more: 503, come
                                    back later), the pixel budget checked again on the whole file there
    over the pixel budget           refused at once with the budget in the message, never decoded

A decode holds little of the GIL (Pillow's decoders and numpy release it), so the heavy lane's thread runs
beside the inference thread rather than taking turns with it; it also runs at a lower CPU priority where
the system allows, so that on a busy machine the small requests come first.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from ..preprocess import READ_FORMATS
from .limits import DEFAULT_MAX_IMAGE_PIXELS, HEAVY_SLOTS, LIGHT_PIXELS, PROBE_BYTES

_HEAVY_NICENESS = 10        # below the event loop and the inference thread


def pixel_count(data: bytes) -> int | None:
    """Width x height from the header, or None when no header of a documented format is found."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: the budget decides here
            with Image.open(io.BytesIO(data), formats=list(READ_FORMATS)) as image:
                width, height = image.size
    except Exception:  # noqa: BLE001 - any failure to find a header means "unknown cost", never an error
        return None
    return width * height


def too_large(name: str, pixels: int, budget: int) -> str:
    return f"{name}: image too large for this server ({pixels} pixels; the limit is {budget})"


class Lanes:
    """Says where an image goes, and runs the heavy lane."""

    def __init__(self, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, heavy_slots: int | None = None):
        self.max_image_pixels = max_image_pixels
        self.heavy_slots = heavy_slots or HEAVY_SLOTS
        self.held = 0  # requests with work in the heavy lane, running or waiting (changed on the event loop)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mnist-heavy",
                                           initializer=_lower_priority)

    def classify(self, data: bytes) -> tuple[str, int | None]:
        """('light' | 'heavy' | 'refuse', pixels) from the first PROBE_BYTES (cheap: runs on the event loop)."""
        pixels = pixel_count(data[:PROBE_BYTES])
        if pixels is None:
            return "heavy", None
        if pixels > self.max_image_pixels:
            return "refuse", pixels
        return ("light" if pixels <= LIGHT_PIXELS else "heavy"), pixels

    def submit(self, function, *args) -> asyncio.Future | None:
        """Run ``function(*args)`` (one request's large images) in the heavy lane, or None when it is full.

        The slot is given back when the work ends, or when it is cancelled before it starts (a client
        that went away): an abandoned wait never leaves a slot held, nor frees one still working.
        """
        if self.held >= self.heavy_slots:
            return None
        self.held += 1
        loop = asyncio.get_running_loop()
        work = self.executor.submit(function, *args)
        work.add_done_callback(lambda _: self._release_from_any_thread(loop))
        return asyncio.wrap_future(work)

    def _release_from_any_thread(self, loop) -> None:
        try:
            loop.call_soon_threadsafe(self._release)
        except RuntimeError:  # the loop has closed: nobody is counting any more
            pass

    def _release(self) -> None:
        self.held -= 1

    def over_budget(self, data: bytes) -> int | None:
        """The whole file's pixel count if it is over the budget (runs in the heavy lane)."""
        pixels = pixel_count(data)
        return pixels if pixels is not None and pixels > self.max_image_pixels else None

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _HEAVY_NICENESS)  # per thread on Linux
    except (AttributeError, OSError):
        pass
