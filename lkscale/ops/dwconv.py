"""Depthwise convolution used by every block family.

``DWConv2d`` is an ``nn.Conv2d`` (so state dicts, fvcore and ONNX see a plain conv) whose forward
goes through ``depthwise_conv2d``; that function is where a faster large-kernel path plugs in.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     padding: int, dilation: int = 1) -> torch.Tensor:
    """Stride-1 'same' depthwise conv: ``weight`` is (C, 1, K, K)."""
    return F.conv2d(x, weight, bias, 1, padding, dilation, weight.shape[0])


class DWConv2d(nn.Conv2d):
    """Stride-1, same-padding depthwise conv (channels -> channels)."""

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1, bias: bool = True):
        super().__init__(channels, channels, kernel_size, stride=1, padding=dilation * (kernel_size - 1) // 2,
                         dilation=dilation, groups=channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, self.bias, self.padding[0], self.dilation[0])
