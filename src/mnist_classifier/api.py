"""``MNISTClassifier``: the seed-compatible facade over data, models, training, evaluation and model files.

    clf = MNISTClassifier()
    clf.load_and_preprocess_data()
    clf.build_model()                 # the default CNN; build_model(hidden_layers=[128, 64]) for the seed MLP
    clf.train_model(epochs=5)
    accuracy, y_pred, y_true = clf.evaluate_model()
    clf.save_model("digits.safetensors")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import persist
from .data import DATASET_SHA256, load_mnist
from .errors import ConfigError
from .evaluate import Evaluation, evaluate
from .inference import resolve_device
from .models import build_model, model_config
from .train import DEFAULT_ARCHITECTURE, History, TrainResult, fit, save_result


class MNISTClassifier:
    def __init__(self, architecture: str = DEFAULT_ARCHITECTURE, data_dir: str | None = None, device: str = "auto",
                 seed: int = 0, output_dir: str = "assets"):
        self.architecture = architecture
        self.data_dir = data_dir
        self.device = resolve_device(device)
        self.seed = seed
        self.output_dir = output_dir  # where figures are written
        self.model = None
        self.model_config: dict = {}
        self.history = History()
        self.evaluation: Evaluation | None = None
        self.metadata: dict = {}
        self.data = None
        self.x_train = self.y_train = self.x_test = self.y_test = None

    # ------------------------------------------------------------ data

    def load_and_preprocess_data(self):
        """Load MNIST; returns ``(x_train, y_train), (x_test, y_test)`` with images as float32 in [0, 1]."""
        self.data = load_mnist(self.data_dir)
        self.x_train = self.data.train_images.astype(np.float32) / 255.0
        self.x_test = self.data.test_images.astype(np.float32) / 255.0
        self.y_train, self.y_test = self.data.train_labels.astype(np.int64), self.data.test_labels.astype(np.int64)
        return (self.x_train, self.y_train), (self.x_test, self.y_test)

    def _require_data(self):
        """The uint8 arrays training and evaluation read; the float copies (about 220 MB) only on request."""
        if self.data is None:
            self.data = load_mnist(self.data_dir)
        return self.data

    def _require_model(self):
        if self.model is None:
            raise ConfigError("no model yet: call build_model() or load_model(path) first")
        return self.model

    # ------------------------------------------------------------ model

    def build_model(self, hidden_layers=None, dropout_rate: float | None = None, architecture: str | None = None,
                    **options):
        """Build a registered architecture. ``hidden_layers`` alone selects the seed's ``mlp``."""
        name = architecture or ("mlp" if hidden_layers is not None else self.architecture)
        if hidden_layers is not None:
            options["hidden_layers"] = list(hidden_layers)
        if dropout_rate is not None:
            options["dropout"] = dropout_rate
        self.architecture = name
        torch.manual_seed(self.seed)  # as `train` does: the same seed gives the CLI's initial weights
        self.model = build_model(name, **options).to(self.device)
        self.model_config = model_config(name, **options)
        self.history, self.evaluation, self.metadata = History(), None, {}
        return self.model

    def train_model(self, epochs: int | None = None, batch_size: int | None = None,
                    validation_split: float | None = None, checkpoint_dir: str | None = None,
                    resume: str | None = None, **train_options) -> History:
        """Train on the 60k training digits with the architecture's preset; keyword arguments override it.

        ``checkpoint_dir`` writes a checkpoint there after every epoch. ``resume=DIR`` continues the run
        checkpointed in DIR (its model, settings and random state) to the same weights an uninterrupted run
        ends with; settings given beside it must agree with the recorded ones.
        """
        from .train import MNIST_TRAIN_SIZE, new_run, resume_run

        overrides = dict(epochs=epochs, batch_size=batch_size, validation_split=validation_split,
                         device=str(self.device), **train_options)
        if resume is not None:
            run = resume_run(resume, write_to=checkpoint_dir, **overrides)
            self.build_model(architecture=run.architecture, **run.model_options)
        else:
            if self.model is None:
                self.build_model()
            n_train = len(self.data.train_images) if self.data is not None else MNIST_TRAIN_SIZE
            run = new_run(self.architecture, self.model_config, checkpoint_dir=checkpoint_dir, n_train=n_train,
                          **{"seed": self.seed, **overrides})
        data = self._require_data()  # after the checks: a nonsense setting fails before the data loads
        self.train_config = run.config
        self._predictor_cache = None  # its BN-folded copy would keep the old weights
        self.history = fit(self.model, data.train_images, data.train_labels, run.config, run.checkpoints())
        self.train_seconds = sum(self.history.seconds)
        return self.history

    def evaluate_model(self):
        """Score on the test set; returns ``(accuracy, y_pred, y_true)`` as in the seed."""
        data = self._require_data()
        self.evaluation = evaluate(self._require_model(), data.test_images, data.test_labels)
        return self.evaluation.accuracy, self.evaluation.y_pred, self.evaluation.y_true

    def predict_proba(self, images) -> np.ndarray:
        """Probabilities (N, 10) for 28x28 images (uint8 0..255 or float 0..1, light ink on dark)."""
        from .inference import predict_proba

        return predict_proba(self._require_model(), images)

    # ------------------------------------------------------------ files

    def save_model(self, path):
        """Write one .safetensors file with weights and metadata (metrics included if evaluated)."""
        model = self._require_model()
        if self.evaluation is None and self.data is not None:
            self.evaluate_model()
        if self.evaluation is not None and hasattr(self, "train_config"):
            result = TrainResult(model, self.architecture, self.model_config, self.train_config, self.history,
                                 self.evaluation, getattr(self, "train_seconds", 0.0))
            return save_result(result, path, self.data.sha256 if self.data else DATASET_SHA256)
        extra = {k: v for k, v in self.metadata.items() if k not in ("architecture", "config")}
        return persist.save_model(path, model, self.architecture, self.model_config, **extra)

    def load_model(self, path=None):
        """Load a model file (default: the shipped pretrained model); returns the model."""
        loaded = persist.load_model(path or persist.pretrained_path(), device=self.device)
        self.model, self.metadata = loaded.model, loaded.metadata
        self.architecture, self.model_config = loaded.metadata["architecture"], loaded.metadata.get("config", {})
        self.history = History.from_dict(loaded.metadata.get("history"))
        self.evaluation = None
        return self.model

    # ---- images

    def _image_predictor(self):
        """A Predictor over the current model (the shipped one if none is built or loaded), reused."""
        from .predict import Predictor

        if self.model is None:
            self.load_model()
        cached = getattr(self, "_predictor_cache", None)
        if cached is None or cached[0] is not self.model:
            loaded = persist.LoadedModel(self.model, self.metadata or {"architecture": self.architecture},
                                         Path("(in memory)"))
            cached = (self.model, Predictor(loaded))
            self._predictor_cache = cached
        return cached[1]

    def classify_image(self, image_path):
        """Read one image file; returns ``(digit, confidence)``, or ``(None, 0.0)`` when it holds no digit.

        Raises ImageError (one line naming the file) if the file cannot be read as an image.
        """
        from .errors import ImageError

        prediction = self._image_predictor().predict(image_path)
        if prediction.error:
            raise ImageError(prediction.error)
        return prediction.digit, prediction.confidence

    def classify_images_in_directory(self, directory, image_extensions=None, recursive: bool = False) -> list[dict]:
        """Classify every image in a folder (extensions case-insensitive, default: every format we decode);
        one ``predict --json`` row per file plus its ``filename``. Unreadable files get an ``error`` and the
        rest go on."""
        from .errors import ImageError
        from .predict import IMAGE_EXTENSIONS, collect_images

        image_extensions = image_extensions or IMAGE_EXTENSIONS

        folder = Path(directory)
        if not folder.is_dir():
            raise ImageError(f"{folder}: not a directory")
        paths = collect_images([folder], recursive=recursive, extensions=image_extensions)
        predictions = self._image_predictor().predict_many(paths)
        return [{"filename": Path(p.path).name, **p.to_dict()} for p in predictions]

    def evaluate_images(self, directory) -> dict:
        """Score the current model (the shipped one if none) on a labelled folder DIR/0 ... DIR/9, read as
        ``predict`` reads it; returns the ``evaluate --images --json`` figures."""
        from .labelled import evaluate_images

        predictor = self._image_predictor()
        return {"model": predictor.model_path, "architecture": self.architecture,
                **evaluate_images(directory, predictor).summary()}

    def finetune(self, directory, out=None, epochs: int | None = None, **options) -> dict:
        """Adapt the current model (the shipped one if none) to the handwriting in a labelled folder DIR/0 ...
        DIR/9; the result becomes the current model, and ``out`` also writes it as a model file.

        ``options`` are finetune.FinetuneConfig fields (lr, batch_size, mnist_share, validation_split, repeats,
        augment, distill, seed, progress). Returns the ``finetune --json`` figures.
        """
        from .finetune import FinetuneConfig, finetune

        if self.model is None:
            self.load_model()
        settings = {"seed": self.seed, "device": str(self.device), **options}
        if epochs is not None:
            settings["epochs"] = epochs
        base = persist.LoadedModel(self.model, {"architecture": self.architecture, "config": self.model_config,
                                                **self.metadata}, Path("(in memory)"))
        result = finetune(directory, out=out, base=base, config=FinetuneConfig.from_options(settings),
                          data=self._require_data())
        self.model, self.metadata, self.evaluation = result.model, result.metadata, None
        self.__dict__.pop("train_config", None)  # save_model now records the fine-tuning, not the MNIST training
        return result.summary()

    def preprocess_custom_image(self, image_path) -> np.ndarray:
        """The (28, 28) float32 array in [0, 1] (light ink on dark, MNIST-style) the model sees for an image.

        Raises ImageError if the file cannot be read or holds no digit (blank, uniform, noise).
        """
        from .errors import ImageError
        from .decode import source_name
        from .preprocess import preprocess_image

        image, reason = preprocess_image(image_path)
        if image is None:
            raise ImageError(f"{source_name(image_path)}: no digit: {reason}")
        return image

    # ---- figures

    def _figure_path(self, name: str) -> Path:
        return Path(self.output_dir) / name

    def plot_training_history(self, path=None) -> Path:
        """Accuracy and loss (train vs validation) and learning rate per epoch; returns the PNG's path."""
        from . import plots

        return plots.plot_training_history(self.history, path or self._figure_path("training_history.png"))

    def plot_confusion_matrix(self, y_true=None, y_pred=None, path=None) -> Path:
        """Counts and row-normalized confusion matrix; without arguments, of the model on the test set."""
        from . import plots

        if y_true is None or y_pred is None:
            _, y_pred, y_true = self.evaluate_model()
        return plots.plot_confusion_matrix(y_true, y_pred, path or self._figure_path("confusion_matrix.png"))

    def visualize_predictions(self, num_samples: int = 25, path=None, seed: int | None = None) -> Path:
        """A grid of random test digits with the model's answer and confidence (green right, red wrong)."""
        from . import plots

        if not 1 <= num_samples <= 100:
            raise ConfigError(f"num_samples must be between 1 and 100, got {num_samples}")
        data = self._require_data()
        rng = np.random.default_rng(self.seed if seed is None else seed)
        pick = np.sort(rng.choice(len(data.test_images), size=num_samples, replace=False))
        images, labels = data.test_images[pick], data.test_labels[pick]
        return plots.plot_predictions(images, labels, self.predict_proba(images),
                                      path or self._figure_path("predictions.png"), count=num_samples)

    def visualize_custom_predictions(self, image_files, path=None) -> Path:
        """Read your own digit images and show each original, the 28x28 the model saw, and the probabilities."""
        from . import plots
        from .predict import Predictor

        files = [image_files] if isinstance(image_files, (str, Path)) else list(image_files)
        if not files:
            raise ConfigError("no image files given")
        loaded = persist.LoadedModel(self._require_model(), self.metadata or {"architecture": self.architecture},
                                     Path("(in memory)"))
        predictions = Predictor(loaded, device=str(self.device)).predict_many(files)
        return plots.plot_custom_predictions(predictions, path or self._figure_path("custom_predictions.png"),
                                             originals=files)
