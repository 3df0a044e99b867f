"""Results as flat rows and as a terminal table: ``predict --csv``, the Parquet of ``--engine ray``, and
the table ``predict`` prints without ``--json``.

A row's fields are those of a ``--json`` row (server/schemas.py documents them), flattened: a digit's
probabilities become p0 .. p9, a number's digits, confidences and boxes become space-separated columns.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from .atomic import atomic_path
from .errors import printable, utf8_safe
from .predict import NumberPrediction

CSV_FIELDS = ["path", "digit", "confidence", "uncertain", "note", "reason", "error"] + [f"p{d}" for d in range(10)]
NUMBER_CSV_FIELDS = ["path", "number", "confidence", "uncertain", "digits", "confidences", "boxes", "reason", "error"]


def csv_row(result) -> dict:
    """One flat ``--csv`` row of a Prediction or a NumberPrediction."""
    if isinstance(result, NumberPrediction):
        return {"path": result.path, "number": result.number or "", "confidence": f"{result.confidence:.6f}",
                "uncertain": int(result.uncertain), "digits": " ".join(str(d.digit) for d in result.digits),
                "confidences": " ".join(f"{d.confidence:.4f}" for d in result.digits),
                "boxes": " ".join(",".join(map(str, d.box)) for d in result.digits),
                "reason": result.reason or "", "error": result.error or ""}
    row = {"path": result.path, "digit": "" if result.digit is None else result.digit,
           "confidence": f"{result.confidence:.6f}", "uncertain": int(result.uncertain),
           "note": result.note or "", "reason": result.reason or "", "error": result.error or ""}
    row.update({f"p{d}": f"{p:.6f}" for d, p in enumerate(result.probabilities)})
    return row


@contextmanager
def csv_writer(path, numbers: bool = False):
    """``with csv_writer(path) as write: write(result)`` streams rows into a temp file in the same folder,
    renamed over ``path`` only when the block ends without an error (atomic)."""
    import csv

    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=NUMBER_CSV_FIELDS if numbers else CSV_FIELDS)
        writer.writeheader()
        # UTF-8 like the rest: a file name that is not has its odd bytes escaped, as in --json
        yield lambda result: writer.writerow({k: utf8_safe(v) if isinstance(v, str) else v
                                              for k, v in csv_row(result).items()})


def table_width(paths) -> int:
    """The path column's width: the longest path, within 4..60 characters."""
    return min(60, max([len(printable(str(p))) for p in paths] + [4]))


def table_header(width: int, numbers: bool = False) -> list[str]:
    head = f"{'path':<{width}}  {'number' if numbers else 'digit':>8}  confidence  note"
    return [head, "-" * len(head)]


def table_line(result, width: int) -> str:
    """One table line of a Prediction or a NumberPrediction; errors and "no digit" reasons in the last column.

    Control characters in file names are escaped: a name must not break the table or drive the terminal.
    """
    numbers = isinstance(result, NumberPrediction)
    path = printable(str(result.path))
    path = path if len(path) <= width else "..." + path[-(width - 3):]
    value = result.number if numbers else result.digit
    error = result.error and result.error.removeprefix(f"{result.path}: ")  # the path is in its own column
    note = (error or (f"no digit: {result.reason}" if result.reason else "")
            or (None if numbers else result.note) or ("uncertain" if result.uncertain else ""))
    shown = "-" if value is None else str(value)
    confidence = f"{result.confidence:10.4f}" if value is not None else f"{'':>10}"
    return f"{path:<{width}}  {shown:>8}  {confidence}  {printable(note)}".rstrip()
