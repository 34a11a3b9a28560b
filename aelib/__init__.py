"""aelib: train, compare and explore autoencoders (fully connected, convolutional, VAE)."""

from .errors import AelibError, CheckpointError, ConfigError, DataError, TrainingDiverged
from .models import PRESETS, ModelConfig, build, get_config

__version__ = "0.1.0"

__all__ = ["AelibError", "CheckpointError", "ConfigError", "DataError", "TrainingDiverged",
           "ModelConfig", "PRESETS", "build", "get_config", "__version__"]
