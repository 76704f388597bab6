"""The export folder's layout: the only code that knows its file names (``lkscale.rundir.RunDir`` is the
same for a run folder). An export run writes::

    OUT/exports.json        the index: study, run folder, selection, retrain epochs, one entry per export
    OUT/<name>/             one exported network
        spec.yaml           the architecture (``ArchSpec``)
        model.safetensors   train-form weights, data and normalisation in the metadata (``lkscale.weights``)
        deploy.safetensors  the re-parameterised (deploy) form
        model.onnx          the deploy form in ONNX (unless skipped)
        config.json         timm's ``local-dir:`` config
        export.json         everything about the export, machine-readable; card.md: the model card

A folder of ``lkscale train --save`` holds ``spec.yaml`` and ``model.safetensors`` only; ``lkscale.load``
reads either kind.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

SPEC_YAML = "spec.yaml"
MODEL_WEIGHTS = "model.safetensors"
DEPLOY_WEIGHTS = "deploy.safetensors"
MODEL_ONNX = "model.onnx"
TIMM_CONFIG = "config.json"
EXPORT_JSON = "export.json"
CARD_MD = "card.md"
INDEX_JSON = "exports.json"


@dataclass(frozen=True)
class ExportDir:
    """One exported network's folder (``OUT/<name>``, or a ``lkscale train --save`` folder)."""
    path: str

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def spec_yaml(self) -> str:
        return self.file(SPEC_YAML)

    @property
    def model_weights(self) -> str:
        return self.file(MODEL_WEIGHTS)

    @property
    def deploy_weights(self) -> str:
        return self.file(DEPLOY_WEIGHTS)

    @property
    def onnx(self) -> str:
        return self.file(MODEL_ONNX)

    @property
    def timm_config(self) -> str:
        return self.file(TIMM_CONFIG)

    @property
    def export_json(self) -> str:
        return self.file(EXPORT_JSON)

    @property
    def card_md(self) -> str:
        return self.file(CARD_MD)


def write_index(out: str, study: str, run_dir: str, selection: str, retrain_epochs: int, exports: list[dict]) -> str:
    """Write ``OUT/exports.json`` (the one writer; ``exports``: name, folder, timm name of each); returns its path."""
    path = os.path.join(out, INDEX_JSON)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"study": study, "run_dir": run_dir, "selection": selection, "retrain_epochs": retrain_epochs,
                   "exports": exports}, f, indent=2)
    return path


__all__ = ["ExportDir", "write_index", "SPEC_YAML", "MODEL_WEIGHTS", "DEPLOY_WEIGHTS", "MODEL_ONNX", "TIMM_CONFIG",
           "EXPORT_JSON", "CARD_MD", "INDEX_JSON"]
