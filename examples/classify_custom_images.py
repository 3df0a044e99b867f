"""Classify your own digit images: files, folders or globs, with the shipped model or one you trained.

    python examples/classify_custom_images.py                         # the sample images in assets/sample_digits/
    python examples/classify_custom_images.py photo.jpg scans/ --model models/cnn.safetensors

Each image goes through the same pipeline as `mnist-classifier predict`: decode (any common format, EXIF
orientation, transparency), find the ink, and normalize it the way MNIST digits were made (20x20 box,
centred by mass in 28x28). An image holding several digits side by side is read as a number, like
`predict --number`. The script prints one line per image (checked against a labels.json next to the images
when there is one) and draws a figure with each original, the 28x28 the model saw and the ten probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mnist_classifier.errors import MNISTClassifierError
from mnist_classifier.persist import load_model, pretrained_path
from mnist_classifier.plots import plot_custom_predictions
from mnist_classifier.predict import Predictor, collect_images

SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "sample_digits"
MAX_IN_FIGURE = 12  # rows in the figure; the printed table lists every image


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=[str(SAMPLES)], help="images, folders or globs (default: samples)")
    parser.add_argument("--model", default=None, help="model file (default: the shipped pretrained model)")
    parser.add_argument("--output-dir", default="reports/custom_images", help="where the figure goes")
    return parser.parse_args(argv)


def expected_labels(files) -> dict[str, str | None]:
    """{file name: expected answer} from labels.json files next to the images (digit, number, or null)."""
    expected = {}
    for folder in {Path(f).parent for f in files}:
        try:
            labels = json.loads((folder / "labels.json").read_text())
        except (OSError, ValueError):
            continue
        expected.update({name: None if value is None else str(value) for name, value in labels.items()})
    return expected


def describe(single, number) -> tuple[str | None, str]:
    """The answer (a digit or a number as text, None for no digit) and a line explaining it."""
    if single.error:
        return None, f"error: {single.error}"
    if len(number.digits) > 1:  # several digits side by side: the number reading is the answer
        return number.number, f"number {number.number}  {number.confidence:6.1%}   ({len(number.digits)} digits)"
    if single.digit is None:
        return None, f"no digit ({single.reason})"
    runner_up, probability = single.top_k[1] if len(single.top_k) > 1 else (None, 0.0)
    flag = "  (uncertain)" if single.uncertain else ""
    return str(single.digit), (f"{single.digit}  {single.confidence:6.1%}   runner-up {runner_up} "
                               f"{probability:5.1%}{flag}")


def main(argv=None) -> int:
    args = parse_args(argv)
    files = collect_images(args.paths)
    if not files:
        print(f"classify_custom_images.py: error: no images found in {', '.join(args.paths)}", file=sys.stderr)
        return 1

    predictor = Predictor(load_model(args.model or pretrained_path()))
    singles, numbers = predictor.predict_many(files), predictor.read_numbers(files)
    expected = expected_labels(files)
    width = max(len(Path(f).name) for f in files)
    checked = matched = 0
    for path, single, number in zip(files, singles, numbers):
        answer, line = describe(single, number)
        name = Path(path).name
        if name in expected:
            checked += 1
            matched += answer == expected[name]
            line += "   ok" if answer == expected[name] else f"   expected {expected[name]}"
        print(f"{name.ljust(width)}  {line}")

    # The figure explains single digits; a number's 28x28 would be all its digits squeezed into one box.
    shown = [i for i, number in enumerate(numbers) if len(number.digits) <= 1][:MAX_IN_FIGURE]
    figure = plot_custom_predictions([singles[i] for i in shown], Path(args.output_dir) / "custom_predictions.png",
                                     originals=[files[i] for i in shown])
    print(f"figure: {figure}")
    read = sum(describe(s, n)[0] is not None for s, n in zip(singles, numbers))
    print(f"{read} of {len(files)} images read" + (f"; {matched} of {checked} as labelled" if checked else ""))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MNISTClassifierError as exc:
        print(f"classify_custom_images.py: error: {exc}", file=sys.stderr)
        sys.exit(1)
