"""Errors of the export step and the checks on names that come from a results folder."""
from __future__ import annotations

import os
import re
from typing import Any

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,159}")


class ExportError(ValueError):
    """An export that cannot be done as asked (bad run folder, unsafe name, missing weights): bad input."""


class ExportCheckError(RuntimeError):
    """An export that was done but failed its check (ONNX output differs, retraining diverged)."""


def check_name(name: Any, what: str = "name") -> str:
    """``name`` if it is a plain file name (letters, digits, ``._+=-``; no separators, no ``..``)."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ExportError(f"unsafe {what} {name!r}: expected a plain name of letters, digits and ._+=- "
                          f"(no path separators, no '..', not absolute)")
    return name


def safe_child(parent: str, name: str, what: str = "name") -> str:
    """``parent/name`` after checking ``name`` and that the resolved path stays inside ``parent``."""
    check_name(name, what)
    base = os.path.realpath(parent)
    path = os.path.realpath(os.path.join(base, name))
    if os.path.dirname(path) != base:
        raise ExportError(f"unsafe {what} {name!r}: resolves to {path}, outside {base}")
    return path
