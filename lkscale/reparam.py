"""Structural re-parameterisation: the deploy form of a trained model.

Every module with a ``reparameterize()`` method (conv-BN pairs, large kernel + small branches,
BN folded into a following 1x1 conv or linear) is switched in place, children before parents.
"""
from __future__ import annotations

import copy

from torch import nn


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return the deploy form of ``model`` (eval mode); the input is left untouched unless ``inplace``."""
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for m in reversed(list(model.modules())):  # modules() is pre-order: reversed puts children first
        fn = getattr(m, "reparameterize", None)
        if callable(fn) and m is not model:
            fn()
    if hasattr(model, "deployed"):
        model.deployed = True
    return model
