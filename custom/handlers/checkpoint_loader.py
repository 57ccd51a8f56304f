"""Loading trained weights for inference and evaluation, with one-line errors naming the file and the problem."""

from __future__ import annotations

import os
import pickle
import re
import zipfile

from ignite.engine import Engine
from monai.handlers import CheckpointLoader

from custom.errors import InputError

__all__ = ["CheckedCheckpointLoader"]


def _mismatch_summary(message: str) -> str:
    """The gist of ``load_state_dict``'s error: counts of missing/unexpected keys and the first size mismatch.

    Parses the text of ``torch.nn.Module.load_state_dict``'s ``RuntimeError`` (``Missing key(s) in state_dict: ...``,
    ``size mismatch for ...``); a message of another form is returned as its first line.
    """
    parts = []
    for label, pattern in (("missing", r"Missing key\(s\) in state_dict: (.*?)(?:\.\s*$|\.\s*\n|\n)"),
                           ("unexpected", r"Unexpected key\(s\) in state_dict: (.*?)(?:\.\s*$|\.\s*\n|\n)")):
        found = re.search(pattern, message, flags=re.S)
        if found:
            keys = re.findall(r'"([^"]+)"', found.group(1))
            parts.append(f"{len(keys)} {label} tensors, e.g. {keys[0]}" if keys else f"{label} tensors")
    sizes = re.findall(r"size mismatch for ([^:]+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from checkpoint, "
                       r"the shape in current model is torch\.Size\((\[[^\]]*\])\)", message)
    if sizes:
        name, theirs, ours = sizes[0]
        parts.append(f"{len(sizes)} shape mismatches, e.g. {name} {theirs} in the file vs {ours} in the network")
    return "; ".join(parts) or message.strip().splitlines()[0][:300]


class CheckedCheckpointLoader(CheckpointLoader):
    """MONAI's :class:`~monai.handlers.CheckpointLoader` (``weights_only=True``) whose failures are one-line
    :class:`~custom.errors.InputError` s naming the file and the problem: missing file, unreadable file, or weights of
    another architecture (other backbone, class count or decoder: counts of missing/unexpected/mis-shaped tensors)."""

    def __call__(self, engine: Engine) -> None:
        path = os.fspath(self.load_path)
        if not os.path.isfile(path):
            raise InputError(f"{path}: checkpoint not found")
        try:
            super().__call__(engine)
        except RuntimeError as e:
            message = str(e)
            if "state_dict" in message or "size mismatch" in message:
                raise InputError(f"{path}: checkpoint of another architecture ({_mismatch_summary(message)}); "
                                 "check backbone / num_classes against the training run") from None
            raise InputError(f"{path}: not a readable checkpoint ({message.strip().splitlines()[0][:200]})") from None
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, AttributeError) as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            raise InputError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first})") from None
