"""Reading other people's handwriting: our own analogues of real collections that are not MNIST.

    python benchmarks/bench_real.py                  # every row (a few minutes)
    python benchmarks/bench_real.py --quick          # smaller sets
    python benchmarks/bench_real.py --model models/cnn-writers.safetensors --only crops photos

Every image goes through the real pipeline (encoded to PNG/JPEG, decoded, normalized, classified by
``Predictor``), so the figures are what ``predict`` answers. Prints a table and writes
benchmarks/results/real.json. Never asserts: the targets are listed next to the figures.

Rows:
  sklearn_paper   scikit-learn's ``load_digits``: real digits of writers outside MNIST (8x8, upsampled
                  to their 32x32 origin), drawn as dark ink on scanned paper (JPEG)
  sklearn_raw     the same digits as they are stored: light on dark, filling their 32x32 frame
  crops           MNIST test digits cropped to their ink (0-1 px margin) and resized to 16x16 or
                  20x20, half of them dark on light: accuracy and "no digit" answers, beside
  crops_reference the same digits uncropped
  fonts           digits of handwriting fonts from Debian's font packages (European 1s and crossed 7s
                  among them), on paper; skipped when none is installed
  fonts_outline   the same for a font that draws each digit as its outline (two thin parallel strokes,
                  hollow inside), which no pen writes: kept apart from the handwriting rows
  styles          MNIST test 1s, 7s and 9s redrawn in their continental styles (a flag on the 1, a crossbar
                  on the 7, a curled tail on the 9) by the generator the writers recipe trains with, on paper:
                  whether the ensemble as a whole reads what its members were taught (not another collection)
  photos          phone-like photos: 900x1200 JPEG, tinted paper, a shadow across the page, perspective,
                  defocus, the digit 8-25% of the frame
  numbers_line    numbers of 2-6 digits by mixed writers (MNIST, scikit-learn, fonts) on one line
  numbers_boxes   numbers of 4-6 digits written one per printed box of a form: closed boxes, adjacent cells,
                  comb fields, grid paper, ruled lines, underlines in turn (mnist_classifier.synth.render_form)
  finetune        fine-tuning on one half of the scikit-learn digits on paper (``finetune``), scored on the
                  other half, and the result's MNIST test accuracy (--finetune; a few minutes more)
  mnist_test      the MNIST test set in memory
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _machine import RESULTS, machine_info, write_result  # noqa: E402
from mnist_classifier import synth  # noqa: E402
from mnist_classifier.data import load_mnist  # noqa: E402
from mnist_classifier.predict import Predictor  # noqa: E402
from mnist_classifier.fit import fit_to_mnist  # noqa: E402

TARGETS = {
    "sklearn_paper": ">= 0.98 (as the 30 writers' 32x32 scans)",
    "sklearn_raw": "(no target)",
    "crops": ">= 0.975, none rejected; within 0.5 pt of crops_reference",
    "crops_reference": "(reference)",
    "fonts": "(no target: styles MNIST lacks)",
    "fonts_outline": "(no target: not handwriting)",
    "styles": "(no target: the training styles, not another collection)",
    "photos": ">= 0.97",
    "numbers_line": ">= 0.95 read exactly",
    "numbers_boxes": ">= 0.92 read exactly",
    "mnist_test": ">= 0.996",
    "finetune": "other half >= 0.985 with MNIST test >= 0.994",
}
FONT_GLOBS = ["/usr/share/fonts/truetype/fifthhorseman/dkg*.ttf", "/usr/share/fonts/truetype/breip/*.ttf",
              "/usr/share/fonts/opentype/bwht/*.otf", "/usr/share/fonts/truetype/humor-sans/*.ttf",
              "/usr/share/fonts/opentype/comic-neue/*.otf", "/usr/share/fonts/opentype/dancingscript/*.otf"]
OUTLINE_FONT_GLOBS = ["/usr/share/fonts/truetype/femkeklaver/*.ttf"]  # hollow letters: a drawing, not handwriting


# ---------------------------------------------------------------------------------------------- digits

def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real digits as 32x32 light-on-dark floats (their bitmaps were 32x32)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = (bunch.images / 16.0).astype(np.float32)
    big = np.stack([np.asarray(Image.fromarray(d, mode="F").resize((32, 32), Image.BICUBIC)) for d in small])
    return np.clip(big, 0, 1), bunch.target.astype(np.int64)


def continental_styles(ink: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The 1s, 7s and 9s among MNIST digits, each redrawn in its continental style (augment.styles)."""
    import torch

    from mnist_classifier import augment

    chosen = np.isin(labels, augment.STYLED_DIGITS)
    x = torch.nn.functional.pad(torch.from_numpy(ink[chosen])[:, None], (augment.CANVAS_MARGIN,) * 4)
    y = torch.from_numpy(labels[chosen])
    styled = augment.refit(augment.styles(x, y, torch.Generator().manual_seed(seed)))
    return styled[:, 0].numpy(), labels[chosen]


def as_mnist_style(ink: np.ndarray) -> np.ndarray:
    """Any light-on-dark digit -> its 28x28 MNIST framing (for composing numbers of mixed writers)."""
    return fit_to_mnist(np.where(ink > 0.05, ink, 0).astype(np.float32))


def font_digits(rng: np.random.Generator, per_font: int, globs=FONT_GLOBS) -> tuple[list[np.ndarray], np.ndarray]:
    """Digits 0-9 of every installed font of ``globs``, each drawn ``per_font`` times with a random size,
    slant and stroke, as light-on-dark float images."""
    fonts = sorted({f for pattern in globs for f in glob.glob(pattern)})
    images, labels = [], []
    for path in fonts:
        for digit in range(10):
            for _ in range(per_font):
                images.append(_draw_glyph(path, str(digit), rng))
                labels.append(digit)
    return images, np.array(labels, dtype=np.int64)


def _draw_glyph(path: str, text: str, rng: np.random.Generator) -> np.ndarray:
    size = int(rng.integers(40, 90))
    font = ImageFont.truetype(path, size)
    canvas = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(canvas).text((size // 2, size // 4), text, fill=255, font=font,
                                stroke_width=int(rng.integers(0, 3)), stroke_fill=255)
    shear = rng.uniform(-0.25, 0.25)
    canvas = canvas.transform(canvas.size, Image.AFFINE, (1, shear, -shear * size, 0, 1, 0), Image.BILINEAR)
    canvas = canvas.rotate(rng.uniform(-8, 8), resample=Image.BILINEAR)
    arr = np.asarray(canvas, dtype=np.float32) / 255.0
    return synth._crop_to_ink(arr, margin=2)


# ---------------------------------------------------------------------------------------------- images

def jpeg(img: Image.Image, rng) -> bytes:
    return synth.to_jpeg(img, quality=int(rng.integers(70, 95)))


def png(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.clip(array * 255 + 0.5, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def on_paper(ink: np.ndarray, rng, canvas=(300, 300)) -> bytes:
    return jpeg(synth.render_on_paper(ink, rng, canvas=canvas, **synth.PAPER), rng)


def tight_crop(ink: np.ndarray, rng) -> np.ndarray:
    """Crop to the ink with a 0-1 px margin and scale the longer side to 16 or 20 px (as USPS-like
    collections store digits: frame-filling, aspect kept, the strokes touching the border); half of them
    dark ink on light."""
    rows, cols = np.flatnonzero(ink.max(axis=1) > 0.1), np.flatnonzero(ink.max(axis=0) > 0.1)
    margin = int(rng.integers(0, 2))
    patch = ink[max(0, rows[0] - margin):rows[-1] + 1 + margin, max(0, cols[0] - margin):cols[-1] + 1 + margin]
    side = int(rng.choice([16, 20]))
    scale = side / max(patch.shape)
    height, width = max(1, round(patch.shape[0] * scale)), max(1, round(patch.shape[1] * scale))
    resized = np.asarray(Image.fromarray(patch, mode="F").resize((width, height), Image.BILINEAR), dtype=np.float32)
    crop = np.zeros((side, side), np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    crop[top:top + height, left:left + width] = np.clip(resized, 0, 1)
    return 1.0 - crop if rng.random() < 0.5 else crop


def phone_photo(ink: np.ndarray, rng) -> bytes:
    """900x1200 JPEG: tinted paper, a shadow across the page, perspective, defocus; digit 8-25% of the frame."""
    width, height = 900, 1200
    tint = rng.uniform(0.7, 0.95, size=3) * np.array([1.0, rng.uniform(0.9, 1.0), rng.uniform(0.75, 1.0)])
    img = synth.render_on_paper(ink, rng, canvas=(width, height), height_fraction=(0.08 * 28 / 20, 0.25 * 28 / 20),
                                rotation=8.0, blur=(0.3, 1.5), noise=(0.01, 0.04), shadow=(0.2, 0.5),
                                paper_rgb=tuple(tint))
    # Perspective: the phone is not held parallel to the page. Each corner of the frame sees a point up to
    # 6% inside the page, so the page still fills the frame.
    inward = rng.uniform(0, 0.06, size=(4, 2)) * np.array([width, height]) * np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]])
    corners = np.array([[0, 0], [0, height], [width, height], [width, 0]], dtype=np.float64) + inward
    img = img.transform((width, height), Image.QUAD, tuple(corners.ravel()), Image.BICUBIC)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5)))
    return jpeg(img, rng)


def number_image(digits: list[np.ndarray], rng) -> bytes:
    ink = synth.compose_number(digits, rng, gap=(3, 8))
    canvas = (int(ink.shape[1] * 5 + 80), 200)
    return jpeg(synth.render_on_paper(ink, rng, canvas=canvas, height_fraction=(0.4, 0.7), rotation=3.0,
                                      blur=(0.0, 1.0), noise=(0.005, 0.02), shadow=(0.0, 0.2)), rng)


# ---------------------------------------------------------------------------------------------- rows

def build_rows(mnist, only, quick: bool, seed: int = 0) -> dict:
    """name -> (sources, labels, kind) with kind "digit" or "number"."""
    rng = np.random.default_rng(seed)
    n = 600 if quick else 2000
    rows = {}
    pick = rng.choice(len(mnist.test_images), size=n, replace=False)
    test_ink = mnist.test_images[pick].astype(np.float32) / 255.0
    test_labels = mnist.test_labels[pick].astype(np.int64)
    sk_images, sk_labels = sklearn_digits()
    if quick:
        sk_images, sk_labels = sk_images[:600], sk_labels[:600]
    fonts, font_labels = font_digits(rng, per_font=2 if quick else 6)
    want = (lambda name: not only or name in only)
    if want("sklearn_paper"):
        rows["sklearn_paper"] = ([on_paper(d, rng, (200, 200)) for d in sk_images], sk_labels, "digit")
    if want("sklearn_raw"):
        rows["sklearn_raw"] = ([png(d) for d in sk_images], sk_labels, "digit")
    if want("crops"):
        rows["crops"] = ([png(tight_crop(d, rng)) for d in test_ink], test_labels, "digit")
        rows["crops_reference"] = ([png(d) for d in test_ink], test_labels, "digit")
    if want("fonts") and fonts:
        rows["fonts"] = ([on_paper(d, rng, (240, 240)) for d in fonts], font_labels, "digit")
    if want("photos"):
        count = 200 if quick else 500
        rows["photos"] = ([phone_photo(d, rng) for d in test_ink[:count]], test_labels[:count], "digit")
    if want("numbers_line"):
        pool = ([as_mnist_style(d) for d in test_ink] + [as_mnist_style(d) for d in sk_images]
                + [as_mnist_style(d) for d in fonts])
        pool_labels = np.concatenate([test_labels, sk_labels, font_labels])
        sources, labels = [], []
        for _ in range(150 if quick else 500):
            idx = rng.choice(len(pool), size=int(rng.integers(2, 7)), replace=False)
            sources.append(number_image([pool[i] for i in idx], rng))
            labels.append("".join(str(pool_labels[i]) for i in idx))
        rows["numbers_line"] = (sources, labels, "number")
    if want("numbers_boxes"):
        sources, labels, styles = [], [], []
        for k in range(150 if quick else 600):
            idx = rng.choice(len(test_ink), size=int(rng.integers(4, 7)), replace=False)
            style = synth.FORM_STYLES[k % len(synth.FORM_STYLES)]
            styles.append(style)
            img = synth.render_form([mnist.test_images[pick[i]] for i in idx], rng, style=style)
            sources.append(jpeg(img, rng))
            labels.append("".join(str(test_labels[i]) for i in idx))
        rows["numbers_boxes"] = (sources, labels, "number", styles)
    if want("fonts_outline"):
        outline, outline_labels = font_digits(rng, per_font=2 if quick else 6, globs=OUTLINE_FONT_GLOBS)
        if outline:
            rows["fonts_outline"] = ([on_paper(d, rng, (240, 240)) for d in outline], outline_labels, "digit")
    if want("styles"):  # its own generators: the rows above keep their draws
        styled, styled_labels = continental_styles(test_ink, test_labels, seed)
        paper_rng = np.random.default_rng(seed + 1)
        rows["styles"] = ([on_paper(d, paper_rng, (240, 240)) for d in styled], styled_labels, "digit")
    return rows


def score(predictor: Predictor, name: str, sources, labels, kind: str, groups=None) -> dict:
    names = [f"{name}/{i}" for i in range(len(sources))]
    started = time.perf_counter()
    if kind == "number":
        results = predictor.read_numbers(sources, names=names)
        right = [r.number == label for r, label in zip(results, labels)]
        rejected = sum(r.number is None for r in results)
    else:
        results = predictor.predict_many(sources, names=names)
        right = [r.digit == label for r, label in zip(results, labels)]
        rejected = sum(r.digit is None and r.error is None for r in results)
    errors = sum(r.error is not None for r in results)
    row = {"n": len(sources), "accuracy": round(float(np.mean(right)), 4), "no_digit": int(rejected),
           "errors": int(errors), "seconds": round(time.perf_counter() - started, 2), "target": TARGETS[name]}
    if groups is not None:  # e.g. the form style of each image
        row["by_group"] = {g: round(float(np.mean([ok for ok, h in zip(right, groups) if h == g])), 4)
                           for g in dict.fromkeys(groups)}
    if kind == "digit":
        confusion = {}
        for r, label in zip(results, labels):
            if r.digit != label:
                key = f"{label}->{'none' if r.digit is None else r.digit}"
                confusion[key] = confusion.get(key, 0) + 1
        row["top_confusions"] = dict(sorted(confusion.items(), key=lambda kv: -kv[1])[:8])
    return row


def finetune_half(predictor: Predictor, mnist) -> dict:
    """Fine-tune the model on one half of the scikit-learn digits (drawn on paper, in DIR/0 ... DIR/9), score
    the other half before and after, and the result's MNIST test accuracy."""
    import tempfile

    from mnist_classifier.finetune import finetune
    from mnist_classifier.labelled import evaluate_images

    rng = np.random.default_rng(1)
    images, labels = sklearn_digits()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (digit, label) in enumerate(zip(images, labels)):
            folder = Path(tmp) / ("teach" if i % 2 == 0 else "check") / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.jpg").write_bytes(on_paper(digit, rng, (200, 200)))
        before = evaluate_images(Path(tmp) / "check", predictor).summary()["accuracy"]
        started = time.perf_counter()
        result = finetune(Path(tmp) / "teach", out=Path(tmp) / "tuned.safetensors", base=predictor.model_path,
                          data=mnist)
        seconds = time.perf_counter() - started
        after = evaluate_images(Path(tmp) / "check", Predictor(Path(tmp) / "tuned.safetensors")).summary()["accuracy"]
    summary = result.summary()
    return {"other_half_before": round(before, 4), "other_half_after": round(after, 4),
            "mnist_test_after": summary["mnist_test_accuracy_after"], "train_images": summary["train_images"],
            "seconds": round(seconds, 1), "target": TARGETS["finetune"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--quick", action="store_true", help="smaller sets")
    parser.add_argument("--seed", type=int, default=0, help="draws of the synthetic rows (the published figures: 0)")
    parser.add_argument("--only", nargs="*", default=None, help="row names to run")
    parser.add_argument("--no-save", action="store_true", help="print only; do not write results/real.json")
    parser.add_argument("--finetune", action="store_true", help="also fine-tune on half the scikit-learn digits")
    args = parser.parse_args(argv)

    mnist = load_mnist(progress=False)
    predictor = Predictor(args.model)
    rows = build_rows(mnist, set(args.only or []), args.quick, args.seed)
    results: dict = {}
    if args.only and not args.no_save and (RESULTS / "real.json").is_file():  # a partial run keeps the other rows
        results = json.loads((RESULTS / "real.json").read_text())["rows"]
    for name, (sources, labels, kind, *groups) in rows.items():
        results[name] = score(predictor, name, sources, labels, kind, *groups)
        r = results[name]
        print(f"{name:<16} {r['accuracy']:.2%}  n={r['n']}  no_digit={r['no_digit']}  errors={r['errors']}  "
              f"({r['seconds']}s)  target {r['target']}  {r.get('top_confusions', r.get('by_group', ''))}", flush=True)
    if not args.only or "mnist_test" in args.only:
        from mnist_classifier.evaluate import evaluate

        accuracy = evaluate(predictor.engine, mnist.test_images, mnist.test_labels).accuracy
        results["mnist_test"] = {"n": len(mnist.test_images), "accuracy": round(accuracy, 4),
                                 "target": TARGETS["mnist_test"]}
        print(f"mnist_test       {accuracy:.2%}", flush=True)
    if args.finetune:
        results["finetune"] = finetune_half(predictor, mnist)
        print(f"finetune         {results['finetune']}", flush=True)
    if not args.no_save:
        write_result("real", {"machine": machine_info(), "model": predictor.model_path, "quick": args.quick,
                              "rows": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
