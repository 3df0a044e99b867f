"""One exception family, so every caller can turn a failure into a single clear line."""

import re


class MNISTClassifierError(Exception):
    """Base class: the message is a complete, one-line explanation for a person."""


class DataError(MNISTClassifierError):
    """MNIST files are missing, corrupt, or not what they claim to be."""


class ModelFileError(MNISTClassifierError):
    """A model file is missing, truncated, corrupt, foreign, or names an unknown architecture."""


class ConfigError(MNISTClassifierError):
    """A hyper-parameter or option makes no sense (negative epochs, split outside (0, 1), ...)."""


class ImageError(MNISTClassifierError):
    """An image could not be read or decoded."""


class TrainingError(MNISTClassifierError):
    """Training cannot go on: the loss became non-finite, or a checkpoint is missing, corrupt or foreign."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (a library's message may run on for a page), or its
    type's name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# Control characters (a newline, an escape sequence that drives the terminal) and bidirectional overrides
# (which reorder what is shown); and surrogates: how Python carries the bytes of a file name that is not
# UTF-8, which cannot even be printed or written as UTF-8.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` safe to show on a terminal, and on one line: such characters written as escapes."""
    return _UNPRINTABLE.sub(_escape, text)


def utf8_safe(text: str) -> str:
    """``text`` with the undecodable bytes of a file name written as escapes (\\xff), so it can be UTF-8."""
    return _SURROGATES.sub(_escape, text)


def _escape(found: re.Match) -> str:
    code = ord(found.group())
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a file name: show the byte
        return f"\\x{code - 0xDC00:02x}"
    return found.group().encode("unicode_escape").decode("ascii")
