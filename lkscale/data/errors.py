"""The data layer's one error type and the check of a DataConfig built in code."""
from __future__ import annotations

from lkscale.config import ConfigError, DataConfig, validate


class DataError(Exception):
    """A dataset that cannot be used as asked; the message names the path or option and the problem."""


def validate_config(cfg: DataConfig) -> None:
    """Check a DataConfig built in code (``lkscale.config.validate``: the study file's rules, and input_size None
    for the native size); a bad field is a DataError naming it."""
    try:
        validate(cfg, "data")
    except ConfigError as e:
        raise DataError(str(e)) from None
