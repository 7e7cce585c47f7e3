"""Exceptions a user can trigger. Messages name the file, the bad value and what was expected."""


class SynthctError(Exception):
    """Base class: the CLI prints these as one clear line and exits non-zero."""


class ImageReadError(SynthctError):
    """A file could not be read as a 3D NIfTI volume."""


class ConfigError(SynthctError):
    """A configuration file or value is invalid."""


class WorkspaceError(SynthctError):
    """The workspace is missing something, or a path escapes it."""


class LeakageError(SynthctError):
    """A run would mix data that must stay apart (e.g. GAN training cases in a test split)."""
