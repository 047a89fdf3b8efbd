#!/usr/bin/env python3
"""Plot a training run's loss.csv (written by training/train.py) to a PNG: loss and teacher-forced tau.

    python training/plot_loss.py RUN/loss.csv loss.png
"""
import csv
import sys


def main() -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    src, dst = sys.argv[1], sys.argv[2]
    rows = list(csv.DictReader(open(src)))
    step = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(step, [float(r["loss"]) for r in rows])
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("weighted CE loss")
    ax[0].set_yscale("log")
    ax[0].grid(alpha=0.3)
    ax[1].plot(step, [float(r["tau_teacher_forced"]) for r in rows])
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("teacher-forced tau (train batch)")
    ax[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
