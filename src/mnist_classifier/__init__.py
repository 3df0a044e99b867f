"""mnist-classifier: train, explain and serve handwritten-digit classifiers, and read digits from real images."""

__version__ = "0.1.0"

__all__ = ["MNISTClassifier", "__version__"]


def __getattr__(name):
    # Imported on first use so that `import mnist_classifier` (and the CLI's --help) stays fast.
    if name == "MNISTClassifier":
        from .api import MNISTClassifier

        return MNISTClassifier
    raise AttributeError(f"module 'mnist_classifier' has no attribute {name!r}")
