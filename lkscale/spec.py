"""ArchSpec: the architecture of one candidate, immutable, validated and serialisable.

A spec is a stem, 3 or 4 stages and a head. Each stage names its block family (``replk``,
``convnext``, ``dcnv3``, ``moga``), depth, width, kernel size, DCN groups (DCNv3 only),
re-parameterisation branches and FFN ratio. The stem, the transitions between stages and the head
are taken from a block family too (by default the family of the first stage), so a published
network is reproduced exactly while the search can still mix families per stage.

Specs round-trip through plain dicts, YAML and JSON, and have a short stable ``name`` (family
tag, kernels, depths, widths, and a hash of everything) used in results and exports.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import yaml

# The block families, one module each under lkscale/blocks/ (lkscale.blocks.REGISTRY is built from this list:
# the spec sits below the blocks and imports none of them).
KNOWN_BLOCKS = ("replk", "convnext", "dcnv3", "moga")


class SpecError(ValueError):
    """An invalid architecture spec; the message names the field, the value and what is allowed."""

    def __init__(self, field_path: str, message: str):
        self.field_path = field_path
        super().__init__(f"{field_path}: {message}")


@dataclass(frozen=True, order=True)
class Branch:
    """One parallel small-kernel branch: a depthwise ``kernel`` x ``kernel`` conv with ``dilation``.

    Its receptive span is ``dilation * (kernel - 1) + 1``; after training it is merged into the
    stage's large kernel (UniRepLKNet-style dilated branches are equivalent to a sparse kernel).
    """

    kernel: int
    dilation: int = 1

    @property
    def span(self) -> int:
        return self.dilation * (self.kernel - 1) + 1

    def to_obj(self) -> int | str:
        return self.kernel if self.dilation == 1 else f"{self.kernel}d{self.dilation}"

    @classmethod
    def parse(cls, obj: Any, where: str) -> "Branch":
        if isinstance(obj, Branch):
            return obj
        if isinstance(obj, bool):
            raise SpecError(where, f"{obj!r} is not a branch; use an odd kernel size like 5 or '3d2'")
        if isinstance(obj, int):
            return cls(obj, 1)
        if isinstance(obj, str):
            m = re.fullmatch(r"\s*(\d+)\s*(?:[dD]\s*(\d+))?\s*", obj)
            if m:
                return cls(int(m.group(1)), int(m.group(2) or 1))
        if isinstance(obj, (list, tuple)) and len(obj) == 2 and all(isinstance(v, int) for v in obj):
            return cls(int(obj[0]), int(obj[1]))
        raise SpecError(where, f"{obj!r} is not a branch; use an odd kernel size like 5 or '3d2' (kernel 3, dilation 2)")


@dataclass(frozen=True)
class StageSpec:
    block: str
    depth: int
    width: int
    kernel: int
    dcn_groups: int | None = None
    reparam: tuple[Branch, ...] = ()
    ffn_ratio: float = 4.0

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"block": self.block, "depth": self.depth, "width": self.width, "kernel": self.kernel}
        if self.dcn_groups is not None:
            d["dcn_groups"] = self.dcn_groups
        d["reparam"] = [b.to_obj() for b in self.reparam]
        d["ffn_ratio"] = self.ffn_ratio
        return d


@dataclass(frozen=True)
class StemSpec:
    """The stem: family whose stem layers are used, and total stride (1, 2 or 4).

    Stride 4 is the ImageNet convention; 1 or 2 keep 28-32 px inputs large enough for big kernels.
    """

    family: str
    stride: int = 4

    def to_dict(self) -> dict:
        return {"family": self.family, "stride": self.stride}


@dataclass(frozen=True)
class ArchSpec:
    stages: tuple[StageSpec, ...]
    stem: StemSpec
    downsample: str  # family whose stride-2 transition is used between stages
    head: str  # family whose classifier head is used
    drop_path_rate: float = 0.0
    layer_scale: float = 1e-6  # ConvNeXt-style layer scale init (0 disables); used by families that have it

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "spec") -> "ArchSpec":
        if not isinstance(data, Mapping):
            raise SpecError(where, f"expected a mapping, got {type(data).__name__}")
        allowed = {"stages", "stem", "downsample", "head", "drop_path_rate", "layer_scale", "name"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SpecError(f"{where}.{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(allowed))}")
        if "stages" not in data:
            raise SpecError(f"{where}.stages", "missing; give a list of 3 or 4 stages")
        raw_stages = data["stages"]
        if not isinstance(raw_stages, (list, tuple)):
            raise SpecError(f"{where}.stages", f"expected a list of 3 or 4 stages, got {type(raw_stages).__name__}")
        stages = tuple(_stage_from_obj(s, f"{where}.stages[{i}]") for i, s in enumerate(raw_stages))
        first = stages[0].block if stages else "replk"
        stem_raw = data.get("stem", {})
        if isinstance(stem_raw, int) and not isinstance(stem_raw, bool):
            stem_raw = {"stride": stem_raw}
        if not isinstance(stem_raw, Mapping):
            raise SpecError(f"{where}.stem", "expected a mapping like {family: replk, stride: 2}")
        bad = sorted(set(stem_raw) - {"family", "stride"})
        if bad:
            raise SpecError(f"{where}.stem.{bad[0]}", "unknown field; allowed: family, stride")
        stem = StemSpec(family=stem_raw.get("family", first), stride=stem_raw.get("stride", 4))
        spec = cls(
            stages=stages,
            stem=stem,
            downsample=data.get("downsample", first),
            head=data.get("head", first),
            drop_path_rate=data.get("drop_path_rate", 0.0),
            layer_scale=data.get("layer_scale", 1e-6),
        )
        spec.validate(where)
        return spec

    @classmethod
    def from_yaml(cls, text: str) -> "ArchSpec":
        return cls._parse(text, yaml.safe_load, yaml.YAMLError, "YAML")

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        return cls._parse(text, json.loads, json.JSONDecodeError, "JSON")

    @classmethod
    def _parse(cls, text: str, loads, error: type[Exception], fmt: str) -> "ArchSpec":
        try:
            data = loads(text)
        except error as e:
            raise SpecError("spec", f"not valid {fmt}: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str) -> "ArchSpec":
        import os

        if not os.path.isfile(path):
            raise SpecError("spec", f"no such file: {path}")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return cls.from_json(text) if path.endswith(".json") else cls.from_yaml(text)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        return {"name": self.name, **self._body()}

    def _body(self) -> dict:
        return {
            "stem": self.stem.to_dict(),
            "downsample": self.downsample,
            "head": self.head,
            "drop_path_rate": self.drop_path_rate,
            "layer_scale": self.layer_scale,
            "stages": [s.to_dict() for s in self.stages],
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json(indent=2) if path.endswith(".json") else self.to_yaml())

    def replace(self, **changes) -> "ArchSpec":
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def replace_stage(self, index: int, **changes) -> "ArchSpec":
        stages = list(self.stages)
        stages[index] = dataclasses.replace(stages[index], **changes)
        return self.replace(stages=tuple(stages))

    def without_reparam(self) -> "ArchSpec":
        """The same network with no re-param branches: what the deploy form computes with."""
        return self.replace(stages=tuple(dataclasses.replace(s, reparam=()) for s in self.stages))

    # ------------------------------------------------------------------ identity
    @property
    def blocks(self) -> tuple[str, ...]:
        return tuple(s.block for s in self.stages)

    @property
    def kernels(self) -> tuple[int, ...]:
        return tuple(s.kernel for s in self.stages)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.stages)

    @property
    def name(self) -> str:
        """Short, stable, filesystem-safe name: ``rep-k13.13.13.13-d2.2.4.2-w32.64.128.256-3f9a1c``."""
        fams = sorted(set(self.blocks))
        tag = "+".join(f[:3] for f in fams)
        dot = lambda xs: ".".join(str(x) for x in xs)  # noqa: E731
        canon = json.dumps(self._body(), sort_keys=True)
        digest = hashlib.sha1(canon.encode()).hexdigest()[:6]
        return f"{tag}-k{dot(self.kernels)}-d{dot(self.depths)}-w{dot(self.widths)}-{digest}"

    def __str__(self) -> str:
        return self.name

    # ------------------------------------------------------------------ validation
    def validate(self, where: str = "spec") -> None:
        n = len(self.stages)
        if n not in (3, 4):
            raise SpecError(f"{where}.stages", f"{n} stages given; a network has 3 or 4 stages")
        for i, st in enumerate(self.stages):
            _validate_stage(st, f"{where}.stages[{i}]")
        for fname in ("downsample", "head"):
            v = getattr(self, fname)
            if v not in KNOWN_BLOCKS:
                raise SpecError(f"{where}.{fname}", f"unknown block family {v!r}; known: {', '.join(KNOWN_BLOCKS)}")
        if self.stem.family not in KNOWN_BLOCKS:
            raise SpecError(f"{where}.stem.family", f"unknown block family {self.stem.family!r}; known: {', '.join(KNOWN_BLOCKS)}")
        if not _is_int(self.stem.stride) or self.stem.stride not in (1, 2, 4):
            raise SpecError(f"{where}.stem.stride", f"{self.stem.stride!r} not allowed; use 1, 2 or 4")
        if not _is_num(self.drop_path_rate) or not 0.0 <= self.drop_path_rate < 1.0:
            raise SpecError(f"{where}.drop_path_rate", f"{self.drop_path_rate!r} must be in [0, 1)")
        if not _is_num(self.layer_scale) or self.layer_scale < 0:
            raise SpecError(f"{where}.layer_scale", f"{self.layer_scale!r} must be >= 0 (0 disables layer scale)")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _stage_from_obj(obj: Any, where: str) -> StageSpec:
    if isinstance(obj, StageSpec):
        return obj
    if not isinstance(obj, Mapping):
        raise SpecError(where, f"expected a mapping with block, depth, width, kernel; got {type(obj).__name__}")
    allowed = {"block", "depth", "width", "kernel", "dcn_groups", "reparam", "ffn_ratio"}
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(allowed))}")
    for req in ("block", "depth", "width", "kernel"):
        if req not in obj:
            raise SpecError(f"{where}.{req}", "missing (required)")
    reparam = obj.get("reparam") or ()
    if isinstance(reparam, (int, str)):
        reparam = (reparam,)
    if not isinstance(reparam, (list, tuple)):
        raise SpecError(f"{where}.reparam", f"expected a list of small kernel sizes, got {reparam!r}")
    branches = tuple(sorted({Branch.parse(b, f"{where}.reparam[{j}]") for j, b in enumerate(reparam)}, reverse=True))
    return StageSpec(
        block=obj["block"],
        depth=obj["depth"],
        width=obj["width"],
        kernel=obj["kernel"],
        dcn_groups=obj.get("dcn_groups"),
        reparam=branches,
        ffn_ratio=obj.get("ffn_ratio", 4.0),
    )


def _validate_stage(st: StageSpec, where: str) -> None:
    if st.block not in KNOWN_BLOCKS:
        raise SpecError(f"{where}.block", f"unknown block {st.block!r}; known: {', '.join(KNOWN_BLOCKS)}")
    if not _is_int(st.depth) or st.depth < 1:
        raise SpecError(f"{where}.depth", f"{st.depth!r} must be an integer >= 1")
    if not _is_int(st.width) or st.width < 1:
        raise SpecError(f"{where}.width", f"{st.width!r} must be an integer >= 1")
    if not _is_int(st.kernel) or st.kernel < 1 or st.kernel % 2 == 0:
        raise SpecError(f"{where}.kernel", f"{st.kernel!r} must be an odd integer >= 1 (3, 5, 7, ...)")
    if not _is_num(st.ffn_ratio) or st.ffn_ratio <= 0:
        raise SpecError(f"{where}.ffn_ratio", f"{st.ffn_ratio!r} must be a number > 0")
    if st.block == "dcnv3":
        g = st.dcn_groups
        if not _is_int(g) or g < 1:
            raise SpecError(f"{where}.dcn_groups", f"{g!r}: a dcnv3 stage needs dcn_groups, an integer >= 1")
        if st.width % g:
            raise SpecError(f"{where}.dcn_groups", f"width {st.width} is not divisible by dcn_groups {g}")
    elif st.dcn_groups is not None:
        raise SpecError(f"{where}.dcn_groups", f"only dcnv3 stages have DCN groups (block is {st.block!r})")
    if st.block == "moga":
        if st.width % 8:
            raise SpecError(f"{where}.width", f"{st.width}: moga splits channels 1:3:4, so width must be divisible by 8")
        if st.kernel < 7:
            raise SpecError(f"{where}.kernel", f"{st.kernel}: moga's largest (dilation-3) kernel must be >= 7")
    spans = set()
    for j, b in enumerate(st.reparam):
        w = f"{where}.reparam[{j}]"
        if not _is_int(b.kernel) or b.kernel < 1 or b.kernel % 2 == 0:
            raise SpecError(w, f"{b.kernel!r} must be an odd kernel size")
        if not _is_int(b.dilation) or b.dilation < 1:
            raise SpecError(w, f"dilation {b.dilation!r} must be >= 1")
        if b.span >= st.kernel:
            raise SpecError(w, f"branch {b.to_obj()!r} spans {b.span} px, which is not smaller than the stage kernel {st.kernel}")
        if (b.kernel, b.dilation) in spans:
            raise SpecError(w, f"duplicate branch {b.to_obj()!r}")
        spans.add((b.kernel, b.dilation))
    if st.reparam and st.block not in ("replk", "convnext"):
        raise SpecError(f"{where}.reparam", f"re-parameterisation branches exist for replk and convnext stages, not {st.block!r}")


def stages_from(spec_like: Iterable[Mapping[str, Any]]) -> tuple[StageSpec, ...]:
    return tuple(_stage_from_obj(s, f"stages[{i}]") for i, s in enumerate(spec_like))


__all__ = ["ArchSpec", "StageSpec", "StemSpec", "Branch", "SpecError", "KNOWN_BLOCKS"]
