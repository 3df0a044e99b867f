"""The ``mnist-classifier`` command: parse arguments, call the library, print. No logic of its own.

Each subcommand is one ``add_<name>`` function that declares its arguments and one ``run_<name>``
function that does the work; ``main`` turns every library error into a single line and exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
import threading

import orjson

from . import __version__
from .errors import ConfigError, MNISTClassifierError, printable, utf8_safe


def _csv_of(kind: type):
    """An argparse type for comma-separated ints or floats, e.g. 32,64,128."""
    noun = "integers" if kind is int else "numbers"

    def parse(text: str) -> list:
        try:
            return [kind(v) for v in text.replace(" ", "").split(",") if v]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {noun}, got {text!r}") from None

    parse.__name__ = f"comma-separated {noun}"  # argparse names the type in its error message
    return parse


# orjson: it encodes numpy arrays itself, and json's indenting encoder is pure Python.
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _dumps(obj, option: int = _JSON_OPTIONS) -> str:
    try:
        return orjson.dumps(obj, option=option).decode()
    except orjson.JSONEncodeError:  # JSON is UTF-8: a file name that is not, with its odd bytes escaped
        return orjson.dumps(_utf8_safe(obj), option=option).decode()


def _utf8_safe(obj):
    if isinstance(obj, str):
        return utf8_safe(obj)
    if isinstance(obj, dict):
        return {key: _utf8_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_utf8_safe(value) for value in obj]
    return obj


def _print_json(obj) -> None:
    sys.stdout.write(_dumps(obj, option=_JSON_OPTIONS | orjson.OPT_INDENT_2))
    sys.stdout.write("\n")


@contextlib.contextmanager
def _json_array(stream):
    """``with _json_array(sys.stdout) as write: write(obj)`` prints a JSON array one element per line, as
    the elements come."""
    written = 0

    def write(obj) -> None:
        nonlocal written
        stream.write(("[\n" if written == 0 else ",\n") + _dumps(obj))
        written += 1

    yield write
    stream.write("\n]\n" if written else "[]\n")


COMMANDS: dict = {}  # name -> (add_parser's settings, the function that adds the command's options), in --help order


def command(name: str, **settings):
    """Register ``add(parser)`` as the options of subcommand ``name``; ``settings`` go to add_parser."""
    def register(add):
        COMMANDS[name] = (settings, add)
        return add
    return register


def _model_argument(parser, positional: bool = True) -> None:
    help_text = "model file (.safetensors); default: the shipped pretrained model"
    if positional:
        parser.add_argument("model", nargs="?", default=None, help=help_text)
    else:
        parser.add_argument("--model", default=None, help=help_text)


def _device_argument(parser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")


def _engine_argument(parser, command: str) -> None:
    from .engines import default_engine, engine_names

    choices, default = engine_names(command), default_engine(command)
    ray = ("; ray: Ray Data reads, decodes and classifies on a local Ray or a cluster (needs the [ray] extra; "
           "PATHs may also be URIs such as s3://bucket/scans/)") if "ray" in choices else ""
    parser.add_argument("--engine", default=default, choices=choices,
                        help=f"what runs the model (default: {default}); onnx: onnxruntime on the CPU, with MODEL "
                             "an exported .onnx file or the shipped model (a .safetensors model is exported on the fly "
                             "and cached); auto: onnx for the shipped model or an .onnx file when onnxruntime is "
                             "installed, torch otherwise" + ray)


def _architecture_name(name: str) -> str:
    """A registered architecture's name, or argparse's one-line error with the nearest name offered."""
    from .models import architecture

    try:
        return architecture(name).name
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _data_dir_argument(parser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four MNIST files (default: MNIST_DATA, the cache, or a download)")


# ---------------------------------------------------------------- train

@command("train", help="train a model on MNIST, evaluate it on the test set, save it",
         description="Train on MNIST's 60k training digits, evaluate on the 10k test digits, save "
                     "the model. Unset options take the architecture's tuned preset. Every setting "
                     "and output path is checked before the data is loaded.")
def add_train(p) -> None:
    from .augment import RECIPES
    from .models import REGISTRY
    from .train import DEFAULT_ARCHITECTURE, OPTIMIZERS, SCHEDULES, TrainConfig

    p.add_argument("--architecture", "-a", type=_architecture_name, metavar="{" + ",".join(REGISTRY) + "}",
                   help=f"model family (default: {DEFAULT_ARCHITECTURE})")
    p.add_argument("--epochs", type=int, help="maximum epochs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (peak LR for onecycle)")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--validation-split", type=float, help="fraction held out for validation (0 = none)")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="epochs without val-loss gain (0 = off)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="augment each batch (as --augment-recipe says)")
    p.add_argument("--augment-recipe", choices=list(RECIPES),
                   help="what --augment does: affine = small random rotation/scale/shift (the default); writers = "
                        "also other writers' styles, slant, width, pen and wobble")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--teacher", metavar="MODEL",
                   help="also learn this model file's answers on every batch (distillation), e.g. an ensemble")
    p.add_argument("--distill", type=float, help="weight of the teacher's answers beside the labels (default: 1)")
    _model_option_arguments(p)
    p.add_argument("--seed", type=int,
                   help=f"random seed (default: {TrainConfig.seed}; same seed, same weights on CPU)")
    _device_argument(p)
    _data_dir_argument(p)
    p.add_argument("--out", "-o", default=None, help="model file to write (default: models/ARCHITECTURE.safetensors)")
    p.add_argument("--checkpoint-dir", metavar="DIR",
                   help="write a checkpoint into DIR after every epoch, to continue the run with --resume DIR")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run checkpointed in DIR with its own settings (other options may be left out "
                        "and must agree if given); it ends with the same model file as an uninterrupted run")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.add_argument("--no-report", dest="report", action="store_false",
                   help="skip the training curves and HTML report written next to the model (<model>-report/)")
    p.set_defaults(run=run_train)


def _model_option_arguments(p) -> None:
    """One flag per constructor option of the model registry (--channels, --dropout, ...): a new option of
    an architecture is a new flag, with its rule and example in the help."""
    from .models import model_options

    for spec in model_options():
        option, text = spec.option, f"{', '.join(spec.architectures)}: {spec.option.meaning}"
        if option.kind is bool:
            how = {"action": argparse.BooleanOptionalAction, "default": None}
        else:
            example = ",".join(map(str, spec.example)) if option.items else spec.example
            how = {"type": _csv_of(option.kind) if option.items else option.kind, "metavar": spec.name.upper()}
            text += f", {option.description()}, e.g. {example}"
        p.add_argument("--" + spec.name.replace("_", "-"), dest=spec.name, help=text, **how)


def _given_model_options(args) -> dict:
    from .models import model_options

    return {spec.name: getattr(args, spec.name) for spec in model_options()}


def run_train(args) -> int:
    from .atomic import check_writable
    from .data import load_mnist
    from .report import report_dir_for
    from .train import DEFAULT_ARCHITECTURE, import_optimizer_support_beside, new_run, resume_run, train_run

    settings = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                    weight_decay=args.weight_decay, schedule=args.schedule, validation_split=args.validation_split,
                    early_stopping=args.early_stopping, augment=args.augment, augment_recipe=args.augment_recipe,
                    label_smoothing=args.label_smoothing, teacher=args.teacher, distill=args.distill,
                    seed=args.seed, device=args.device, progress=not args.quiet)
    model_options = _given_model_options(args)
    if args.resume:
        run = resume_run(args.resume, args.architecture, model_options, out=args.out, write_to=args.checkpoint_dir,
                         **settings)
        if run.out is None:  # a run started from Python may have no model file of its own
            raise ConfigError(f"the run checkpointed in {args.resume} names no model file: give --out")
    else:
        architecture = args.architecture or DEFAULT_ARCHITECTURE
        run = new_run(architecture, model_options, out=args.out or f"models/{architecture}.safetensors",
                      checkpoint_dir=args.checkpoint_dir, **settings)
    if args.report:
        check_writable(report_dir_for(run.out), folder=True)
    import_optimizer_support_beside()
    data = load_mnist(args.data_dir, progress=not args.quiet)
    result = train_run(run, data)
    summary = result.summary()
    if args.report:
        from .report import write_training_report

        if not args.quiet:
            print("writing the training report ...", file=sys.stderr, flush=True)
        report = write_training_report(result, data)
        summary["report"], summary["report_seconds"] = str(report.index), round(report.seconds["total"], 3)
    if args.json:
        _print_json(summary)
    else:
        print(f"{result.architecture}: test accuracy {summary['accuracy']:.2%}, loss {summary['loss']:.4f} "
              f"after {summary['epochs']} epochs in {summary['train_seconds']:.1f}s; saved {summary['model_path']}")
        if args.report:
            print(f"report: {summary['report']}")
    return 0


# ---------------------------------------------------------------- evaluate

@command("evaluate", help="score a model on the MNIST test set, or on your own labelled images",
         description="Accuracy, loss, per-class precision/recall/F1 and the most confused pairs "
                     "on MNIST's 10k test digits, or with --images DIR on a labelled folder: DIR/0 "
                     "... DIR/9, each holding images of that digit in any format predict reads, "
                     "read exactly as predict reads them. There an unreadable file is left out of "
                     "n (one line on stderr, and unreadable_files in --json); an image answered "
                     "'no digit' stays in n as a wrong answer of its digit: it lowers that digit's "
                     "recall and accuracy, counts in per_class no_digit and in no_digit, is a "
                     "uniform guess in the loss, and appears in no cell of the confusion matrix "
                     "(whose rows then sum to support minus no_digit).")
def add_evaluate(p) -> None:
    _model_argument(p)
    p.add_argument("--model", dest="model_option", default=None, metavar="MODEL", help="the same as MODEL")
    p.add_argument("--images", metavar="DIR", help="score on the labelled folder DIR/0 ... DIR/9 instead of MNIST")
    _data_dir_argument(p)
    _device_argument(p)
    _engine_argument(p, "evaluate")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_evaluate)


def run_evaluate(args) -> int:
    from .data import load_mnist
    from .engines import open_engine
    from .evaluate import evaluate

    if args.model and args.model_option and args.model != args.model_option:
        raise ConfigError(f"two models given ({args.model} and --model {args.model_option}): give one")
    model = args.model or args.model_option
    if args.images:
        return _evaluate_images(args, model)
    engine = open_engine(args.engine, model, device=args.device)
    data = load_mnist(args.data_dir, progress=not args.json)
    summary = {"model": engine.model_path, "architecture": engine.metadata["architecture"], "engine": engine.name,
               **evaluate(engine, data.test_images, data.test_labels).summary()}
    if args.json:
        _print_json(summary)
    else:
        _print_evaluation(summary, "")
    return 0


def _evaluate_images(args, model) -> int:
    from .labelled import evaluate_images
    from .predict import Predictor

    predictor = Predictor(model, device=args.device, engine=args.engine)
    scored = evaluate_images(args.images, predictor)
    summary = {"model": predictor.model_path, "architecture": predictor.metadata["architecture"],
               "engine": predictor.engine.name, **scored.summary()}
    for line in summary["warnings"] + summary["unreadable_files"] + summary["no_digit_files"]:
        _warn(args.command, line)
    if args.json:
        _print_json(summary)
    else:
        _print_evaluation(summary, f" on {summary['images']}",
                          f"  no digit {summary['no_digit']}  unreadable {summary['unreadable']}")
    return 0


def _print_evaluation(summary: dict, where: str, extra: str = "") -> None:
    print(f"{summary['model']} ({summary['architecture']}){where}: accuracy {summary['accuracy']:.2%}  "
          f"loss {summary['loss']:.4f}  n {summary['n']}  errors {summary['errors']}{extra}")
    images = "no_digit" in next(iter(summary["per_class"].values()))
    print("digit  precision  recall  f1" + ("      n  no digit" if images else ""))
    for digit, row in summary["per_class"].items():
        counts = f"  {row['support']:5d}  {row['no_digit']:8d}" if images else ""
        print(f"  {digit}    {row['precision']:.4f}    {row['recall']:.4f}  {row['f1']:.4f}{counts}")
    pairs = ", ".join(f"{p['true']}->{p['predicted']} ({p['count']})" for p in summary["most_confused"][:5])
    print(f"most confused: {pairs or 'none'}")


def _warn(command: str, line: str) -> None:
    print(f"mnist-classifier {command}: warning: {printable(line)}", file=sys.stderr)


def _check_output(option: str, path) -> None:
    """A file the command will write: a one-line error now if it cannot be, not after all the work."""
    from .atomic import unwritable

    problem = unwritable(path)
    if problem:
        raise ConfigError(f"{option} {path}: {problem}")


# ---------------------------------------------------------------- finetune

@command("finetune", help="adapt a model to your own handwriting from a labelled folder",
         description="Fine-tune a model (default: the shipped one) on a labelled folder DIR/0 ... "
                     "DIR/9 of your images, read exactly as predict reads them; unreadable and "
                     "'no digit' files are reported and skipped. A seeded, stratified part is held "
                     "out to judge the result: the epoch with the best accuracy on it is kept, or "
                     "the base weights if no epoch beats them. Every batch mixes in MNIST training "
                     "digits so MNIST is not forgotten; its test accuracy is reported before and "
                     "after. Writes an ordinary model file that records what it was tuned from and on.")
def add_finetune(p) -> None:
    from .finetune import FinetuneConfig as preset

    p.add_argument("images", metavar="DIR", help="labelled folder: DIR/0 ... DIR/9, each holding images of that digit")
    p.add_argument("--out", "-o", required=True, help="model file to write (.safetensors)")
    p.add_argument("--model", default=None, metavar="BASE",
                   help="model file to start from; default: the shipped pretrained model")
    p.add_argument("--epochs", type=int, help=f"epochs (default: {preset.epochs}; each shows every image "
                                              f"{preset.repeats} times, differently distorted)")
    p.add_argument("--lr", type=float, help=f"peak learning rate of the one-cycle schedule (default: {preset.lr})")
    p.add_argument("--batch-size", type=int, help=f"images per step (default: {preset.batch_size})")
    p.add_argument("--mnist-share", type=float,
                   help=f"part of each batch that is MNIST training digits (default: {preset.mnist_share})")
    p.add_argument("--validation-split", type=float,
                   help=f"part of each digit's images held out to judge the result (default: {preset.validation_split})")
    p.add_argument("--seed", type=int, help=f"random seed (default: {preset.seed})")
    _device_argument(p)
    _data_dir_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object with the results")
    p.add_argument("--quiet", "-q", action="store_true", help="no per-epoch lines")
    p.set_defaults(run=run_finetune)


def run_finetune(args) -> int:
    from .finetune import FinetuneConfig, finetune

    options = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "mnist_share": args.mnist_share,
               "validation_split": args.validation_split, "seed": args.seed}
    config = FinetuneConfig(device=args.device, progress=not (args.quiet or args.json),
                            **{k: v for k, v in options.items() if v is not None})
    result = finetune(args.images, out=args.out, base=args.model, config=config, data_dir=args.data_dir,
                      warn=lambda line: _warn(args.command, line))
    summary = result.summary()
    if args.json:
        _print_json(summary)
        return 0
    print(f"{summary['base_model']} fine-tuned on {sum(summary['images_per_class'])} images in {summary['images']} "
          f"({summary['train_images']} to learn from, {summary['validation_images']} to validate, "
          f"{summary['skipped']} skipped)")
    before, after = summary["validation_accuracy_before"], summary["validation_accuracy_after"]
    if summary["kept_base"]:
        print(f"validation accuracy {before:.2%}: no epoch beat the base model, so its weights were kept")
    else:
        print(f"validation accuracy {before:.2%} -> {after:.2%} (epoch {summary['best_epoch']} of {summary['epochs']})")
    print(f"MNIST test accuracy {summary['mnist_test_accuracy_before']:.2%} -> "
          f"{summary['mnist_test_accuracy_after']:.2%}")
    print(f"saved {summary['model_path']}")
    return 0


# ---------------------------------------------------------------- combine

@command("combine", help="join several trained models into one ensemble model file",
         description="Join model files into one ensemble whose answer is the members' mean "
                     "log-probability; score it on MNIST's test set and save it.")
def add_combine(p) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL", help="model files (.safetensors) to join")
    p.add_argument("--out", "-o", required=True, help="model file to write")
    _data_dir_argument(p)
    _device_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object with the results")
    p.set_defaults(run=run_combine)


def run_combine(args) -> int:
    from .data import load_mnist
    from .errors import ConfigError
    from .evaluate import evaluate
    from .inference import resolve_device
    from .persist import combine_models, save_model

    if len(args.models) < 2:
        raise ConfigError("combine needs at least two model files")
    _check_output("--out", args.out)
    model, config, record = combine_models(args.models, device=resolve_device(args.device))
    data = load_mnist(args.data_dir, progress=not args.json)
    evaluation = evaluate(model, data.test_images, data.test_labels)
    metrics = {k: v for k, v in evaluation.summary().items() if k != "confusion_matrix"}
    path = save_model(args.out, model, "ensemble", config, metrics=metrics, dataset_sha256=data.sha256, **record)
    summary = {"accuracy": evaluation.accuracy, "loss": evaluation.loss, "n": evaluation.n,
               "members": list(args.models), "model_path": str(path)}
    if args.json:
        _print_json(summary)
    else:
        print(f"ensemble of {len(args.models)}: test accuracy {evaluation.accuracy:.2%}, loss {evaluation.loss:.4f}; "
              f"saved {path}")
    return 0


# ---------------------------------------------------------------- report

@command("report", help="write every figure and an offline HTML report for a model",
         description="Score a model on MNIST's test set and write OUT/index.html with its metadata, "
                     "accuracy, loss, per-class precision/recall/F1, most confused pairs and all "
                     "figures (OUT/figures/*.png), plus OUT/report.json.")
def add_report(p) -> None:
    _model_argument(p)
    p.add_argument("--out", "-o", default=None, help="folder to write (default: reports/<model file stem>)")
    _data_dir_argument(p)
    _device_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (the numbers and file paths)")
    p.set_defaults(run=run_report)


def run_report(args) -> int:
    from .report import build_report

    report = build_report(args.model, out_dir=args.out, data_dir=args.data_dir, device=args.device)
    if args.json:
        _print_json({k: v for k, v in report.to_json().items() if k != "metadata"})
        return 0
    print(f"{report.summary['model']}: accuracy {report.summary['accuracy']:.2%}  loss {report.summary['loss']:.4f}; "
          f"wrote {report.index} and {len(report.figures)} figures")
    return 0


# ---------------------------------------------------------------- serve

@command("serve", help="serve the REST API and the drawing page over HTTP",
         description="Serve the REST API (POST /v1/predict, /v1/predict/batch, /v1/predict/number, "
                     "GET /v1/model, /healthz, /readyz; docs at /docs) and the drawing page at / "
                     "with uvicorn. The model is loaded once; one log line per request on stderr.")
def add_serve(p) -> None:
    _model_argument(p, positional=False)
    host, port = _server_default("DEFAULT_HOST"), _server_default("DEFAULT_PORT")
    p.add_argument("--host", default=host,
                   help=f"interface to listen on (default: {host}, this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=port, help=f"TCP port (default: {port})")
    _device_argument(p)
    p.add_argument("--workers", type=int, default=1,
                   help="server processes, each with its own copy of the model (default: 1)")
    p.add_argument("--allowed-host", action="append", metavar="HOST", dest="allowed_hosts",
                   help="a Host name clients use to reach the server; repeat for several, '*' for any "
                        "(default: localhost, 127.0.0.1 and the --host address)")
    p.add_argument("--max-pending", type=int, metavar="N",
                   help="requests in progress at once; more get 503 with Retry-After (default: "
                        f"{_server_default('DEFAULT_MAX_PENDING')})")
    p.add_argument("--max-image-pixels", type=int, metavar="N",
                   help="largest image accepted, in pixels (width x height), checked before decoding; "
                        f"larger ones get 413 (default: {_server_default('DEFAULT_MAX_IMAGE_PIXELS')})")
    _engine_argument(p, "serve")
    p.set_defaults(run=run_serve)


def _server_default(name: str):
    from .server import limits

    return getattr(limits, name)


def run_serve(args) -> int:
    from .server.serve import serve

    serve(model=args.model, host=args.host, port=args.port, device=args.device, workers=args.workers,
          allowed_hosts=args.allowed_hosts, max_pending=args.max_pending, max_image_pixels=args.max_image_pixels,
          engine=args.engine)
    return 0


# ---------------------------------------------------------------- predict

@command("predict", help="read digits (or numbers) from image files and folders",
         description="Classify the digit in each image: PNG, JPEG, BMP, TIFF, GIF, WebP; scans, "
                     "photos and drawings, dark ink on light paper or light on dark. Folders and "
                     "glob patterns are expanded. Exit code 1 if any file could not be read.")
def add_predict(p) -> None:
    from .predict import DEFAULT_THRESHOLD, DEFAULT_TOP_K, IMAGE_EXTENSIONS

    _model_argument(p, positional=False)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    p.add_argument("--json", action="store_true", help="print a JSON array, one object per image")
    p.add_argument("--csv", metavar="FILE", help="also write the results to a CSV file")
    p.add_argument("--number", action="store_true", help="read a multi-digit number on one line per image")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    p.add_argument("--ext", default=None, metavar="EXTS",
                   help="comma-separated extensions taken from folders, case-insensitive "
                        f"(default: {','.join(IMAGE_EXTENSIONS)})")
    p.add_argument("--threshold", type=float, default=None,
                   help=f"confidence below which an answer is flagged uncertain (default: {DEFAULT_THRESHOLD})")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K,
                   help=f"alternatives listed per image in --json (default: {DEFAULT_TOP_K})")
    _device_argument(p)
    _engine_argument(p, "predict")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default and most: the cores this process may use)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="with --engine ray: join this running cluster (default: start Ray on this machine)")
    p.add_argument("--parquet", metavar="OUT_DIR", default=None,
                   help="with --engine ray: write the results as Parquet files into this folder")
    p.set_defaults(run=run_predict)


def run_predict(args) -> int:
    if args.engine == "ray":
        return run_predict_ray(args)
    from .formats import csv_writer, table_header, table_line, table_width
    from .predict import DEFAULT_THRESHOLD, IMAGE_EXTENSIONS, Predictor, collect_images, nothing_found

    if args.csv:
        _check_output("--csv", args.csv)
    extensions = [e.strip() for e in args.ext.split(",") if e.strip()] if args.ext else list(IMAGE_EXTENSIONS)
    paths = collect_images(args.paths, recursive=args.recursive, extensions=extensions)
    if not paths:
        raise ConfigError(nothing_found(args.paths, args.recursive, extensions))
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    predictor = Predictor(args.model, device=args.device, threshold=threshold, workers=args.workers,
                          top_k=args.top_k, engine=args.engine)
    if args.workers and args.workers > predictor.workers:
        _warn(args.command, f"--workers {args.workers}: this process may use {predictor.workers} cores, "
                            f"so {predictor.workers} decoding processes are started")
    # The bar goes to stderr; JSON rows streaming onto the same terminal would break it up.
    progress = (not args.quiet and sys.stderr.isatty() and len(paths) >= 500
                and not (args.json and sys.stdout.isatty()))
    read = predictor.iter_numbers if args.number else predictor.iter_predictions
    # CSV and JSON rows are written as the results come instead of being gathered, so memory stays flat
    # for any number of files. The table's short lines are printed at the end, clear of the progress bar.
    width = table_width(paths)
    failed, table = 0, table_header(width, numbers=args.number)
    with contextlib.ExitStack() as outputs:
        write_csv = outputs.enter_context(csv_writer(args.csv, numbers=args.number)) if args.csv else None
        write_json = outputs.enter_context(_json_array(sys.stdout)) if args.json else None
        for result in read(paths, progress=progress):
            failed += result.error is not None
            if write_csv:
                write_csv(result)
            if write_json:
                write_json(result.to_dict())
            else:
                table.append(table_line(result, width))
    if not args.json:
        print("\n".join(table))
        if failed:
            print(f"{failed} of {len(paths)} files could not be read", file=sys.stderr)
    return 1 if failed else 0


# ---------------------------------------------------------------- export

@command("export", help="write a model as ONNX, for onnxruntime and other ONNX runtimes",
         description="Export a model file to ONNX: input 'images' float32 (N, 1, 28, 28), "
                     "ink in [0, 1] on a 0 background, for any N; output 'probabilities' (N, 10). "
                     "The MNIST standardization is inside the graph, an ensemble is one graph, and "
                     "the model file's metadata is in the ONNX metadata_props. The export is checked "
                     "with onnx's checker and against torch in onnxruntime before it is written. "
                     "Needs the onnx extra: pip install 'mnist-classifier[onnx]'.")
def add_export(p) -> None:
    _model_argument(p)
    p.add_argument("--out", "-o", required=True, help="ONNX file to write (.onnx)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_export)


def run_export(args) -> int:
    from .onnx_export import export_model

    summary = export_model(args.model, args.out)
    if args.json:
        _print_json(summary)
    else:
        print(f"{summary['model']} ({summary['architecture']}): wrote {summary['out']}, opset {summary['opset']}, "
              f"{summary['bytes']:,} bytes, probabilities within {summary['max_probability_difference']:.1e} of torch")
    return 0


def run_predict_ray(args) -> int:
    if not (args.parquet or args.json):
        raise ConfigError("--engine ray writes --parquet OUT_DIR (or prints --json for small jobs)")
    if args.csv:
        raise ConfigError("--engine ray writes --parquet, not --csv")
    try:
        from . import distributed
    except ImportError as exc:
        raise ConfigError(f"--engine ray needs Ray Data: pip install 'mnist-classifier[ray]' ({exc})") from None

    distributed.start(args.ray_address)
    results = distributed.predict_files(args.paths, model=args.model, number=args.number, recursive=args.recursive,
                                        extensions=args.ext.split(",") if args.ext else None,
                                        threshold=args.threshold)
    if args.parquet:
        files, failed = distributed.write_parquet(results, args.parquet)
        print(f"{files} files read into {args.parquet}" + (f"; {failed} could not be read" if failed else ""),
              file=sys.stderr)
    if args.json:
        rows = distributed.sorted_rows(distributed.read_parquet(args.parquet) if args.parquet else results)
        failed = sum(row["error"] is not None for row in rows)
        with _json_array(sys.stdout) as write:
            for row in rows:
                write(row)
    return 1 if failed else 0


# ---------------------------------------------------------------- entry point

def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` a command's name, one whose other commands have their name and help
    line but no options: their options read defaults from modules that import torch, which a command that
    does not need it should not pay for at start-up."""
    parser = argparse.ArgumentParser(prog="mnist-classifier",
                                     description="Train, explain and serve handwritten-digit classifiers.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (settings, add) in COMMANDS.items():
        if only in (None, name):
            add(sub.add_parser(name, **settings))
        else:
            sub.add_parser(name, help=settings["help"])
    return parser


class Stopped(KeyboardInterrupt):
    """A signal asked the command to stop; it unwinds as Ctrl-C does."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# SIGTERM: what timeout, systemd and docker stop send; SIGHUP: the terminal went away.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stop_signals_as_interrupts():
    """SIGTERM and SIGHUP end a command the way Ctrl-C does: the same clean-up (no half-written file, no
    decoding worker left behind) and exit code 128 + the signal's number. By default they would end the
    process at once, with no clean-up at all."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def stop(signum, frame):
        for each in STOP_SIGNALS:  # once is enough: a second signal must not cut the clean-up short
            signal.signal(each, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    # uvicorn has its own graceful shutdown on these signals.
    handling = contextlib.nullcontext() if args.command == "serve" else _stop_signals_as_interrupts()
    try:
        with handling:
            return args.run(args)
    except MNISTClassifierError as exc:
        print(f"mnist-classifier {args.command}: error: {printable(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        print(f"mnist-classifier {args.command}: {how}", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as other command-line tools do. Pointing stdout
        # at /dev/null keeps Python's exit-time flush from failing once more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the shell's code for it


def console_main() -> None:
    """The ``mnist-classifier`` command: main, then exit.

    Everything the command made is frozen out of the garbage collector first: at exit the interpreter
    would otherwise walk every object torch and matplotlib created, in one last collection that takes
    longer than many a command's work. Files and pools are closed by then; the memory goes back to the
    system with the process. (Not in main, which tests call in-process and which must not freeze theirs.)
    """
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console_main()
