"""bf16 autocast against fp32 for the train step on the CPU (1 thread, batch 64): does a CPU with AMX-BF16 pay?

    python benchmarks/bf16_cpu.py > benchmarks/results/bf16_cpu_amx.txt

The measurement is ``benchmarks/device_check.py``'s precision section (``precision_ratios``: the candidates of
``train_step.py``, median of 10 steps per precision) run on the CPU; the header says which CPU and whether it
has the AMX-BF16 units that make bf16 matmuls cheap.
"""
from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import device_check as dc  # noqa: E402

from lkscale.train import torch_threads  # noqa: E402


def main() -> int:
    info = open("/proc/cpuinfo").read() if os.path.isfile("/proc/cpuinfo") else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown")
    print(f"cpu: {model}; amx_bf16 flag: {'amx_bf16' in info}; torch {torch.__version__}; "
          f"load {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with torch_threads(1):
        dc.precision_ratios(torch.device("cpu"), 10, 64)
    print(f"load after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
