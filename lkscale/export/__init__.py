"""Export the winners of a search run, load them back, and use them through timm.

Modules: ``trial`` (export_trial / export_winners), ``select`` (which trials), ``onnx`` (ONNX + check),
``card`` (model card), ``load`` (lkscale.load), ``timm_cfg`` (names and pretrained cfgs),
``timm_registry`` (register_timm / register_export), ``safety`` (errors, name checks).

Loading::

    model = lkscale.load("exports/rep-k13.7.3-...")               # train form, eval mode
    model = lkscale.load("exports/rep-k13.7.3-...", deploy=True)  # deploy form

timm (nothing is registered at import time)::

    import lkscale, timm
    lkscale.register_timm()                                       # lkscale_spec and every preset
    timm.create_model("lkscale_replk_proxy", num_classes=10)
    timm.create_model("lkscale_replk_proxy", features_only=True)  # a backbone for detection/segmentation
    timm.create_model("local-dir:exports/rep-k13.7.3-...", pretrained=True)
    name = lkscale.register_export("exports/rep-k13.7.3-...")     # -> "lkscale_rep_k13_7_3_..."
    timm.create_model(name, pretrained=True)                      # the export's own weights
"""
from lkscale.export.load import load, read_export
from lkscale.export.onnx import ONNX_ATOL, export_onnx
from lkscale.export.safety import ExportCheckError, ExportError, check_name, safe_child
from lkscale.export.select import select_winners
from lkscale.export.card import model_card
from lkscale.export.timm_cfg import pretrained_cfg, timm_config, timm_name
from lkscale.export.trial import export_trial, export_winners


def register_timm() -> list[str]:
    """Register lkscale's timm entry points (``lkscale_spec``, ``lkscale_<preset>``); see timm_registry."""
    from lkscale.export.timm_registry import register_timm as _reg

    return _reg()


def register_export(path: str) -> str:
    """Register an export folder with timm; returns its timm name (see timm_registry)."""
    from lkscale.export.timm_registry import register_export as _reg

    return _reg(path)


__all__ = ["export_winners", "export_trial", "select_winners", "export_onnx", "load", "read_export", "model_card",
           "register_export", "register_timm", "timm_name", "timm_config", "pretrained_cfg", "check_name",
           "safe_child", "ExportError", "ExportCheckError", "ONNX_ATOL"]
