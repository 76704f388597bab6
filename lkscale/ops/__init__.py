"""Operators PyTorch serves badly on our targets: large depthwise conv (CPU training), DCNv3 core."""
from lkscale.ops.dcnv3 import dcnv3_core
from lkscale.ops.dwconv import DWConv2d, depthwise_conv2d

__all__ = ["DWConv2d", "depthwise_conv2d", "dcnv3_core"]
