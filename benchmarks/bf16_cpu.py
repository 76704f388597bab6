"""bf16 autocast against fp32 for the train step on the CPU (1 thread, batch 64): does a CPU with AMX-BF16 pay?

    python benchmarks/bf16_cpu.py > benchmarks/results/bf16_cpu_amx.txt
"""
import os, sys, time
sys.path.insert(0, "benchmarks")
import torch
import device_check as dc
from lkscale.train import torch_threads
print(f"cpu: {open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}; "
      f"amx_bf16 flag: {'amx_bf16' in open('/proc/cpuinfo').read()}; torch {torch.__version__}; "
      f"load {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
with torch_threads(1):
    dc.precision_ratios(torch.device("cpu"), 10, 64)
print(f"load after {os.getloadavg()[0]:.2f}")
