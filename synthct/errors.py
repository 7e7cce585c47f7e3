"""Exceptions a user can trigger. Messages name the file, the bad value and what was expected."""

from __future__ import annotations

import errno

# OS errors that are the user's environment, not a defect: reported as one line, no traceback.
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "file name too long",
}


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


class Cancelled(Exception):  # noqa: N818 - an outcome, not an error
    """Work stopped on request at a safe point (e.g. training after writing a checkpoint).

    Not a `SynthctError`: nothing went wrong. The message says what was kept and how to go on.
    """


def environment_error_message(exc: BaseException) -> str | None:
    """One line for an OS-level failure the user must fix (full disk, permissions, read-only
    file system, over-long name), found in `exc` or its causes; None for anything else.

    Libraries sometimes wrap the OSError (torch's writer raises RuntimeError "file write
    failed"), so the chain of causes and the text are both checked.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS:
            what = _ENVIRONMENT_ERRNOS[e.errno]
            where = f" writing {e.filename}" if e.filename else ""
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            return f"{what}{where}" + ("; free some space and run it again" if full else "")
        e = e.__cause__ or e.__context__
    text = str(exc)
    if "No space left on device" in text:
        return "no space left on device; free some space and run it again"
    if "file write failed" in text:  # torch's stream writer hides the OS error
        return "a file could not be written (is the disk full?); free some space and run it again"
    return None
