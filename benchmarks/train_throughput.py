"""Training throughput (images/s) of litefer_cpsca vs mobilenetv3_large at several input sizes.

One full training step as the engine runs it (batched augmentation, forward with embedding, joint
loss, backward, Adam and centre-optimizer steps), channels_last, median over timed steps after
warm-up. Both models are measured in the same process, so their ratio is meaningful even on a busy
machine. Usage:

    python benchmarks/train_throughput.py --sizes 48 112 224 --out results/train_throughput.md
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from litefer import create_model
from litefer.data import AugmentConfig, Preprocess, augment
from litefer.losses import JointLoss
from litefer.utils import atomic_write_text, hardware_summary


def measure(name: str, size: int, batch: int, steps: int, warmup: int, threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(name, num_classes=8).to(memory_format=torch.channels_last).train()
    crit = JointLoss(8, model.embedding_dim, softmax=1.0, centre=0.4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    copt = torch.optim.SGD(crit.center.parameters(), lr=0.5)
    pp, aug = Preprocess(input_size=size, in_chans=3), AugmentConfig()
    faces = torch.randint(0, 256, (batch, 48, 48, 1), dtype=torch.uint8)
    labels = torch.randint(0, 8, (batch,))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        x = augment(faces, pp, aug).contiguous(memory_format=torch.channels_last)
        logits, emb = model(x, return_embedding=True)
        loss, _ = crit(logits, emb, labels)
        opt.zero_grad(set_to_none=True)
        copt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        crit.center.centers.grad.mul_(crit.centre_grad_scale)
        copt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["litefer_cpsca", "mobilenetv3_large"])
    p.add_argument("--sizes", nargs="+", type=int, default=[48, 112, 224])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="markdown file to write")
    args = p.parse_args(argv)
    rows = []
    for size in args.sizes:
        rates = {m: measure(m, size, args.batch, args.steps, args.warmup, args.threads) for m in args.models}
        base = rates[args.models[-1]]
        for m in args.models:
            rows.append({"model": m, "input": size, "images_per_s": round(rates[m], 1),
                         "ratio_vs_" + args.models[-1]: round(rates[m] / base, 2)})
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        ref = args.models[-1]
        lines = ["# Training throughput on the CPU", "",
                 f"Command: `python {' '.join(sys.argv)}`  ",
                 f"Hardware: {hardware_summary()}; torch {torch.__version__}, {args.threads} threads  ",
                 f"Step: batched augmentation + forward + joint loss (softmax + centre) + backward + Adam, "
                 f"batch {args.batch}, channels_last; median of {args.steps} steps after {args.warmup} warm-up.",
                 "", f"| model | input | images/s | ratio vs {ref} |", "|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['model']} | {r['input']} | {r['images_per_s']} | {r['ratio_vs_' + ref]} |")
        atomic_write_text(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
