"""User-facing input errors and a one-line report of them.

Errors about the user's input (files, datalists, protocols, checkpoints) derive from :class:`InputError` and name the
file and the problem; the user-facing error classes are defined here. MONAI's config machinery wraps them in several layers of ``RuntimeError``; the bundles call
:func:`install_excepthook` in ``initialize`` so that such a failure prints one line instead of a traceback wall
(``IDEAL_TRACEBACK=1`` shows the full traceback).
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

__all__ = [
    "InputError",
    "EncoderLoadError",
    "DatasetError",
    "ProtocolError",
    "ReportError",
    "MissingFrameError",
    "ExportError",
    "find_input_error",
    "install_excepthook",
    "warn",
]


class InputError(ValueError):
    """A problem with the user's input; the message names the file (or setting) and the problem."""


class EncoderLoadError(InputError):
    """A checkpoint holds no weights that fit the encoder."""


class DatasetError(InputError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


class ProtocolError(InputError):
    """A protocol is unknown, malformed, or does not fit the data folder."""


class ReportError(InputError):
    """A problem with the inputs of the cardiac function report; the message names the file or patient."""


class MissingFrameError(ReportError):
    """A patient lacks its ED or ES file (skippable with ``--skip-incomplete``)."""


class ExportError(InputError):
    """The bundle cannot be exported as asked; the message names the file or folder and the problem."""


def warn(message: str) -> None:
    """Print ``warning: <message>`` on stderr: a problem the command works around (a skipped case, say)."""
    print(f"warning: {message}", file=sys.stderr)


def find_input_error(exc: BaseException | None) -> InputError | None:
    """The first :class:`InputError` in the ``__cause__`` / ``__context__`` chain of ``exc``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def install_excepthook() -> None:
    """Report uncaught input errors as ``error: <message>`` on stderr (exit status 1); others unchanged."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        found = find_input_error(value)
        if found is None or os.environ.get("IDEAL_TRACEBACK"):
            previous(kind, value, tb)
            return
        print(f"error: {found}", file=sys.stderr)

    sys.excepthook = hook
