"""Classify your own digit images: files, folders or globs, with the shipped model or one you trained.

    python examples/classify_custom_images.py                         # the sample images in assets/sample_digits/
    python examples/classify_custom_images.py photo.jpg scans/ --model models/cnn.safetensors

Each image goes through the same pipeline as `mnist-classifier predict`: decode (any common format, EXIF
orientation, transparency), find the ink, and normalize it the way MNIST digits were made (20x20 box,
centred by mass in 28x28). The script prints one line per image and draws a figure with the original, the
28x28 the model saw and the ten probabilities.
"""

from __future__ import annotations

import argparse
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


def main(argv=None) -> int:
    args = parse_args(argv)
    files = collect_images(args.paths)
    if not files:
        print(f"classify_custom_images.py: error: no images found in {', '.join(args.paths)}", file=sys.stderr)
        return 1

    loaded = load_model(args.model or pretrained_path())
    predictions = Predictor(loaded).predict_many(files)
    width = max(len(Path(f).name) for f in files)
    for prediction in predictions:
        name = Path(prediction.path).name.ljust(width)
        if prediction.error:
            print(f"{name}  error: {prediction.error}")
        elif prediction.digit is None:
            print(f"{name}  no digit ({prediction.reason})")
        else:
            second = prediction.top_k[1] if len(prediction.top_k) > 1 else (None, 0.0)
            flag = "  (uncertain)" if prediction.uncertain else ""
            print(f"{name}  {prediction.digit}  {prediction.confidence:6.1%}   runner-up {second[0]} "
                  f"{second[1]:5.1%}{flag}")

    # The same figure as MNISTClassifier.visualize_custom_predictions(files), from the predictions we already have.
    figure = plot_custom_predictions(predictions[:MAX_IN_FIGURE], Path(args.output_dir) / "custom_predictions.png",
                                     originals=files[:MAX_IN_FIGURE])
    print(f"figure: {figure}")
    read = sum(p.digit is not None for p in predictions)
    print(f"{read} of {len(predictions)} images read as a digit")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MNISTClassifierError as exc:
        print(f"classify_custom_images.py: error: {exc}", file=sys.stderr)
        sys.exit(1)
