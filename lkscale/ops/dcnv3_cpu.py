"""DCNv3 aggregation on the CPU as one fused C++ loop (forward and backward), built on first use.

The pure-PyTorch core (``lkscale.ops.dcnv3``, ``F.grid_sample``) materialises every sampled point,
``P = K*K`` times the output, then multiplies it by the mask and sums it; its backward does the same
again. Profiled on the pareto study's DCNv3 9-9-7-3 network, that core was ~75% of a training step
(``aten::mul``, ``grid_sampler_2d(_backward)``, ``sum``, ``copy_``). Here one loop per output row
(image, pixel, group) walks the ``P`` points, computes each point's four bilinear taps and weights
(zero outside the image, as ``grid_sample`` with zero padding) and accumulates ``mask * weight *
value`` straight into the output; the backward walks the same points once, scattering into the value
gradient (rows of one image only touch that image's pixels, so images run in parallel without races)
and forming the location and mask gradients from the same dot products. Nothing of size ``P x
output`` is ever allocated.

The extension is compiled with ``torch.utils.cpp_extension.load_inline`` (g++ and ninja) into
lkscale's cache (``config.default_cache_dir``), under a name that includes the CPU model (it is built
with ``-march=native``); concurrent processes wait on torch's build lock. :func:`load` returns None
(and says why once, in the log) when it cannot be built; ``dcnv3_core`` then keeps the reference path.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform

import torch
from torch.utils import cpp_extension

from lkscale.config import default_cache_dir

log = logging.getLogger(__name__)

_SOURCE = r'''
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>

// value (N,H,W,C); loc (N,Ho,Wo,G,P,2) pixel (x,y); mask (N,Ho,Wo,G,P); out (N,Ho,Wo,C)
template <typename T>
static inline void corners(T x, T y, int64_t H, int64_t W, int64_t* off, T* wt, int64_t G, int64_t C) {
  T x0f = std::floor(x), y0f = std::floor(y);
  int64_t x0 = (int64_t)x0f, y0 = (int64_t)y0f;
  T fx = x - x0f, fy = y - y0f;
  const int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1}, ys[4] = {y0, y0, y0 + 1, y0 + 1};
  const T ws[4] = {(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy};
  for (int c = 0; c < 4; ++c) {
    bool ok = xs[c] >= 0 && xs[c] < W && ys[c] >= 0 && ys[c] < H;
    off[c] = ok ? (ys[c] * W + xs[c]) * C : -1;
    wt[c] = ws[c];
  }
}

torch::Tensor dcn_forward(torch::Tensor value, torch::Tensor loc, torch::Tensor mask, int64_t G) {
  const int64_t N = value.size(0), H = value.size(1), W = value.size(2), C = value.size(3);
  const int64_t Ho = loc.size(1), Wo = loc.size(2), P = loc.size(4), gc = C / G;
  auto out = torch::zeros({N, Ho, Wo, C}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "dcn_forward", [&] {
    const scalar_t* v = value.data_ptr<scalar_t>(); const scalar_t* l = loc.data_ptr<scalar_t>();
    const scalar_t* m = mask.data_ptr<scalar_t>(); scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const scalar_t* vn = v + n * H * W * C;
        for (int64_t r = n * Ho * Wo * G; r < (n + 1) * Ho * Wo * G; ++r) {
          const int64_t g = r % G; scalar_t* orow = o + r * gc;
          for (int64_t p = 0; p < P; ++p) {
            const scalar_t mp = m[r * P + p]; int64_t off[4]; scalar_t wt[4];
            corners<scalar_t>(l[(r * P + p) * 2], l[(r * P + p) * 2 + 1], H, W, off, wt, G, C);
            for (int c = 0; c < 4; ++c) {
              if (off[c] < 0) continue;
              const scalar_t a = mp * wt[c]; const scalar_t* src = vn + off[c] + g * gc;
              for (int64_t k = 0; k < gc; ++k) orow[k] += a * src[k];
            }
          }
        }
      }
    });
  });
  return out;
}

std::vector<torch::Tensor> dcn_backward(torch::Tensor grad, torch::Tensor value, torch::Tensor loc, torch::Tensor mask,
                                        int64_t G) {
  const int64_t N = value.size(0), H = value.size(1), W = value.size(2), C = value.size(3);
  const int64_t Ho = loc.size(1), Wo = loc.size(2), P = loc.size(4), gc = C / G;
  auto gv = torch::zeros_like(value); auto gl = torch::zeros_like(loc); auto gm = torch::zeros_like(mask);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "dcn_backward", [&] {
    const scalar_t* v = value.data_ptr<scalar_t>(); const scalar_t* l = loc.data_ptr<scalar_t>();
    const scalar_t* m = mask.data_ptr<scalar_t>(); const scalar_t* go = grad.data_ptr<scalar_t>();
    scalar_t* pgv = gv.data_ptr<scalar_t>(); scalar_t* pgl = gl.data_ptr<scalar_t>(); scalar_t* pgm = gm.data_ptr<scalar_t>();
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {  // an image's rows read and write only its own pixels
      for (int64_t n = n0; n < n1; ++n) {
        const scalar_t* vn = v + n * H * W * C; scalar_t* gvn = pgv + n * H * W * C;
        for (int64_t r = n * Ho * Wo * G; r < (n + 1) * Ho * Wo * G; ++r) {
          const int64_t g = r % G; const scalar_t* grow = go + r * gc;
          for (int64_t p = 0; p < P; ++p) {
            const scalar_t x = l[(r * P + p) * 2], y = l[(r * P + p) * 2 + 1], mp = m[r * P + p];
            int64_t off[4]; scalar_t wt[4];
            corners<scalar_t>(x, y, H, W, off, wt, G, C);
            const scalar_t fx = x - std::floor(x), fy = y - std::floor(y);
            const scalar_t dx[4] = {-(1 - fy), (1 - fy), -fy, fy}, dy[4] = {-(1 - fx), -fx, (1 - fx), fx};
            scalar_t s = 0, sx = 0, sy = 0;
            for (int c = 0; c < 4; ++c) {
              if (off[c] < 0) continue;
              const scalar_t* src = vn + off[c] + g * gc; scalar_t* dst = gvn + off[c] + g * gc;
              const scalar_t a = mp * wt[c]; scalar_t d = 0;
              for (int64_t k = 0; k < gc; ++k) { d += grow[k] * src[k]; dst[k] += a * grow[k]; }
              s += wt[c] * d; sx += dx[c] * d; sy += dy[c] * d;
            }
            pgm[r * P + p] = s; pgl[(r * P + p) * 2] = mp * sx; pgl[(r * P + p) * 2 + 1] = mp * sy;
          }
        }
      }
    });
  });
  return {gv, gl, gm};
}
'''

_state: dict = {}


def _cpu_tag() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return hashlib.sha1(f"{model}|{torch.__version__}|{_SOURCE}".encode()).hexdigest()[:10]


def load():
    """The compiled extension (``dcn_forward``, ``dcn_backward``), or None where it cannot be built."""
    if "ext" not in _state:
        name = f"lkscale_dcnv3_cpu_{_cpu_tag()}"
        build = os.path.join(default_cache_dir(), "torch_extensions", name)
        try:
            os.makedirs(build, exist_ok=True)
            _state["ext"] = cpp_extension.load_inline(name, cpp_sources=_SOURCE, functions=["dcn_forward", "dcn_backward"],
                                                      extra_cflags=["-O3", "-march=native"], build_directory=build)
        except Exception as e:  # noqa: BLE001 - no compiler, no ninja, a read-only cache: the reference path
            log.warning("DCNv3: the fused CPU kernel could not be built (%s: %s); using the grid_sample path",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            _state["ext"] = None
    return _state["ext"]


class _Aggregate(torch.autograd.Function):
    """``out = sum_p mask_p * bilinear(value, loc_p)`` per (image, pixel, group); see the module docstring."""

    @staticmethod
    def forward(ctx, value, loc, mask, groups: int):
        ctx.save_for_backward(value, loc, mask)
        ctx.groups = groups
        return load().dcn_forward(value, loc, mask, groups)

    @staticmethod
    def backward(ctx, grad):
        value, loc, mask = ctx.saved_tensors
        gv, gl, gm = load().dcn_backward(grad.contiguous(), value, loc, mask, ctx.groups)
        return gv, gl, gm, None


def aggregate(value: torch.Tensor, loc: torch.Tensor, mask: torch.Tensor, groups: int) -> torch.Tensor:
    """``value (N, H, W, C)``, ``loc (N, Ho, Wo, G, P, 2)`` sampling positions in input pixels ``(x, y)``,
    ``mask (N, Ho, Wo, G, P)``; all one float dtype on the CPU. Returns ``(N, Ho, Wo, C)``."""
    return _Aggregate.apply(value.contiguous(), loc.contiguous(), mask.contiguous(), groups)


__all__ = ["load", "aggregate"]
