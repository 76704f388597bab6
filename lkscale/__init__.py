"""lkscale: search and scale large-kernel convolutional networks."""
from lkscale import _compat  # noqa: F401  (must run before anything imports timm/torchvision)
from lkscale.spec import ArchSpec, Branch, SpecError, StageSpec, StemSpec

__version__ = "0.1.0"


def build_model(spec, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0):
    """Build the network for an ArchSpec or preset name (see lkscale.model)."""
    from lkscale.model import build_model as _build

    return _build(spec, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)


def reparameterize(model, inplace: bool = False):
    """Deploy form of a model: BNs folded, small/dilated branches merged into the large kernels."""
    from lkscale.reparam import reparameterize as _rep

    return _rep(model, inplace=inplace)


def get_preset(name: str) -> ArchSpec:
    from lkscale.presets import get_preset as _get

    return _get(name)


def load(path: str, deploy: bool = False):
    """Rebuild a model from its folder (``lkscale export`` or ``lkscale train --save``): train form, or
    ``deploy`` form (eval mode)."""
    from lkscale.export import load as _load

    return _load(path, deploy=deploy)


def register_timm() -> list[str]:
    """Register lkscale models with timm (``lkscale_spec`` and ``lkscale_<preset>``); returns their names.

    Nothing is registered at import time; call this once before ``timm.create_model("lkscale_...")`` or
    ``timm.create_model("local-dir:<export folder>")``."""
    from lkscale.export.timm_registry import register_timm as _reg

    return _reg()


def register_export(path: str) -> str:
    """Register an export folder with timm (``pretrained=True`` loads its weights); returns the timm name."""
    from lkscale.export.timm_registry import register_export as _reg

    return _reg(path)


__all__ = ["ArchSpec", "StageSpec", "StemSpec", "Branch", "SpecError", "build_model", "reparameterize",
           "get_preset", "load", "register_timm", "register_export", "__version__"]
