"""One exception family, so every caller can turn a failure into a single clear line."""


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
