"""Errors a user can cause, defined once. Each carries a sentence a user understands."""


class AelibError(ValueError):
    """Base class: bad input from a user (a file, an array, a config). A ``ValueError``."""


class DataError(AelibError):
    """An image array, image file or dataset that aelib cannot use."""


class ConfigError(AelibError):
    """A model or training configuration that makes no sense."""


class CheckpointError(AelibError):
    """A checkpoint file that is missing, corrupt, unsafe or does not match its metadata."""


class TrainingDiverged(AelibError):
    """The loss became NaN or infinite; the model keeps its last good weights."""


class OutputError(AelibError):
    """A file aelib was asked to write that cannot be written there (a folder, a read-only place)."""
