"""User-facing errors: the CLI prints their message and exits with status 2, without a traceback."""


class AwaresError(Exception):
    """Base class of errors caused by user input rather than by a bug."""


class ImageInputError(AwaresError):
    """An image is missing, unreadable, or of a size the pipeline cannot process."""


class ModelLoadError(AwaresError):
    """A model directory is missing, incomplete or unreadable."""


class InputError(AwaresError):
    """Any other invalid user input (an empty question, a bad option value)."""


class ConfigError(InputError, ValueError):
    """A config file that cannot be read, names unknown keys or holds a value out of its choices."""
