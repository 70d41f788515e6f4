"""Which depthwise-convolution path avoids cuDNN's run-time compilation, and what it costs in steady speed (issue 11).

    python benchmarks/depthwise_kernels.py [--variants bf16_nhwc,fp16_nhwc,...] [--iters 20]

MobileNetV2's depthwise convolutions at the shipped study's shapes (256x320, batch 16), forward and backward (input
and weight gradients, the gradient in the output's layout), each variant in a fresh process: the first pass over
every shape (what a fresh trial thread pays), the steady time of one pass (CUDA events), and whether the process then
has NVRTC mapped. (On the H200 image it was mapped in every variant, ATen's own kernels included, so the first pass
is the figure that tells which paths compiled.) Variants:

- ``bf16_nhwc``: what a trial runs (bf16, channels-last, cuDNN);  ``fp16_nhwc`` / ``fp32_nhwc``: the same in fp16 /
  fp32 (TF32 allowed);
- ``bf16_nchw``: NCHW tensors, which ATen gives its own kernels; ``bf16_lever``: the same reached from channels-last
  tensors as ``trainer.native_depthwise`` does (layout copies in and out);
- ``fp16_cast``: bf16 channels-last in and out, the convolution itself in fp16 through cuDNN (casts in and out).

Prints one JSON line per variant and a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

# (channels, height, width, stride) of MobileNetV2's depthwise convolutions for a 256x320 input
SHAPES = [(32, 128, 160, 1), (96, 128, 160, 2), (144, 64, 80, 1), (144, 64, 80, 2), (192, 32, 40, 1),
          (192, 32, 40, 2), (384, 16, 20, 1), (576, 16, 20, 1), (576, 16, 20, 2), (960, 8, 10, 1)]
VARIANTS = ["bf16_nhwc", "fp16_nhwc", "fp32_nhwc", "bf16_nchw", "bf16_lever", "fp16_cast"]
BATCH = 16


def child(variant: str, iters: int) -> dict:
    import torch
    import torch.nn.functional as F

    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = False  # as the trials run (their CUDA graphs need the heuristics' plans)
    torch.backends.cudnn.allow_tf32 = True
    dtype = {"fp16_nhwc": torch.float16, "fp32_nhwc": torch.float32}.get(variant, torch.bfloat16)
    layout = torch.contiguous_format if variant == "bf16_nchw" else torch.channels_last
    cases = []
    for channels, height, width, stride in SHAPES:
        x = torch.randn(BATCH, channels, height, width, device=device, dtype=dtype).to(memory_format=layout)
        w = torch.randn(channels, 1, 3, 3, device=device, dtype=dtype).to(memory_format=layout)
        cases.append((x.requires_grad_(), w.requires_grad_(), stride))

    def conv(x, w, stride):
        if variant == "bf16_lever":
            out = F.conv2d(x.contiguous(), w.contiguous(), None, stride, 1, 1, x.shape[1])
            return out.contiguous(memory_format=torch.channels_last)
        if variant == "fp16_cast":
            return F.conv2d(x.half(), w.half(), None, stride, 1, 1, x.shape[1]).to(x.dtype)
        return F.conv2d(x, w, None, stride, 1, 1, x.shape[1])

    def one_pass() -> None:
        for x, w, stride in cases:
            out = conv(x, w, stride)
            out.backward(torch.ones_like(out))  # ones_like keeps the output's layout

    torch.cuda.synchronize()
    start = time.perf_counter()
    one_pass()
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    for _ in range(3):
        one_pass()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(iters):
        one_pass()
    end.record()
    torch.cuda.synchronize()
    with open("/proc/self/maps") as f:
        nvrtc = any("/libnvrtc" in line for line in f)
    return {"variant": variant, "first_pass_s": round(first, 3), "steady_pass_ms": round(begin.elapsed_time(end) / iters, 3),
            "nvrtc_mapped": nvrtc, "cudnn": torch.backends.cudnn.version()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--child")
    args = parser.parse_args()
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    if args.child:
        print(json.dumps(child(args.child, args.iters)), flush=True)
        return 0
    rows = []
    for variant in args.variants.split(","):
        done = subprocess.run([sys.executable, __file__, "--child", variant, "--iters", str(args.iters)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            row = {"variant": variant, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
        else:
            row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("| variant | first pass (s) | steady pass (ms) | NVRTC mapped |")
    print("|---|---:|---:|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['variant']} | {row['error']} | | |")
        else:
            print(f"| {row['variant']} | {row['first_pass_s']} | {row['steady_pass_ms']} | {row['nvrtc_mapped']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
