"""Benchmark: the torch tabular model's training throughput (rows/s) on the GPU and on the CPU, in one run.

Run: ``.venv/bin/python bench/gpu_training.py [--rows 2000000] [--cpu-rows 200000] [--epochs 3]``.

The model matrix comes from one generated day (``--base-rows``), is encoded once and tiled on each
device to ``--rows`` rows (cuda) or ``--cpu-rows`` rows (CPU: a 2-core machine would take minutes over
millions of rows; rows/s is per row either way). The data sits on the device before timing starts.
Each device trains a fresh network of the training CLI's architecture with the CLI's own epoch loop
(``train_epoch``) in ``--batch-size`` slices, one warm-up epoch on a slice, then ``--epochs`` timed
epochs. cuda is skipped cleanly when torch sees no GPU. Prints a few human lines, then exactly one
line of JSON: rows/s on each device and their ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
from dataclasses import replace

import numpy as np
import torch

from mlloop.data.generator import generate_day
from mlloop.features import build_use_case_features, feature_columns, model_matrix
from mlloop.training.torch_model import (
    Architecture,
    DeviceData,
    Preprocessing,
    TabularNet,
    TabularParams,
    to_device,
    train_epoch,
)
from mlloop.usecase import load_use_case

DAY = dt.date(2026, 1, 5)
SEED = 42


def base_data(rows: int) -> tuple[Preprocessing, DeviceData]:
    """Return one generated day's model matrix as encoded CPU tensors (labelled), with its preprocessing."""
    use_case = load_use_case("card_fraud")
    day = generate_day(DAY, rows=rows, seed=SEED)
    frame = build_use_case_features(day.transactions, use_case)
    labels = day.labels.set_index(use_case.key_column).loc[frame[use_case.key_column], use_case.target_column]
    matrix = model_matrix(frame, use_case.features, feature_columns(use_case.features))
    preprocessing = Preprocessing.fit(matrix)
    return preprocessing, to_device(preprocessing, matrix, labels.to_numpy(dtype=np.float32), "cpu")


def tiled(tensor: torch.Tensor, rows: int, device: str) -> torch.Tensor:
    """Return ``rows`` rows of ``tensor`` repeated, living on ``device`` (copied there once)."""
    repeats = -(-rows // tensor.shape[0])
    return tensor.to(device).repeat(repeats, *([1] * (tensor.dim() - 1)))[:rows].contiguous()


def _synchronise(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


def rows_per_second(
    preprocessing: Preprocessing, base: DeviceData, rows: int, device: str, params: TabularParams, epochs: int
) -> float:
    """Train a fresh network on ``rows`` tiled rows on ``device``; return training rows per second."""
    if base.labels is None:
        raise ValueError("the benchmark trains: pass the labels to to_device")
    torch.manual_seed(params.seed)
    data = DeviceData(*(tiled(t, rows, device) for t in (base.numeric, base.categorical, base.labels)))
    net = TabularNet(Architecture.for_data(preprocessing, params)).to(device)
    fraud_rate = float(base.labels.mean())
    pos_weight = torch.tensor((1 - fraud_rate) / fraud_rate, device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimizer = torch.optim.AdamW(net.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
    generator = torch.Generator(device=device).manual_seed(params.seed)

    def epoch(on: DeviceData) -> float:
        return train_epoch(net, on, optimizer, loss_fn, batch_size=params.batch_size, generator=generator)

    epoch(data.head(4 * params.batch_size))  # warm-up: allocator, kernels, thread pools
    _synchronise(device)
    times = []
    for number in range(1, epochs + 1):
        started = time.perf_counter()
        loss = epoch(data)  # returns a Python float: the device has finished the epoch
        _synchronise(device)
        times.append(time.perf_counter() - started)
        print(f"  {device} epoch {number}: {rows / times[-1]:,.0f} rows/s (loss {loss:.4f})")
    return rows * epochs / sum(times)


def main() -> None:
    """Time training epochs on cuda (when present) and on the CPU; print one JSON line of the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows trained on per epoch on cuda")
    parser.add_argument("--cpu-rows", type=int, default=200_000, help="rows trained on per epoch on the CPU")
    parser.add_argument("--base-rows", type=int, default=100_000, help="generated rows tiled to --rows")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per device (after a warm-up)")
    parser.add_argument("--batch-size", type=int, default=65_536)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params = replace(TabularParams(seed=SEED), batch_size=args.batch_size)
    started = time.perf_counter()
    preprocessing, base = base_data(args.base_rows)
    print(
        f"encoded {len(base):,} generated rows ({preprocessing.numeric_width} numeric inputs, "
        f"{len(preprocessing.categorical)} categoricals) in {time.perf_counter() - started:.1f}s; "
        f"batches of {params.batch_size:,} rows, MLP {list(params.hidden_sizes)}"
    )

    cuda_rate = None
    name = "cpu"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        print(f"cuda ({name}): {args.rows:,} rows on the device")
        cuda_rate = rows_per_second(preprocessing, base, args.rows, "cuda", params, args.epochs)
    else:
        print("cuda: torch sees no GPU; skipped")
    cpu_rows = min(args.cpu_rows, args.rows)
    print(f"cpu ({torch.get_num_threads()} threads): {cpu_rows:,} rows")
    cpu_rate = rows_per_second(preprocessing, base, cpu_rows, "cpu", params, args.epochs)
    ratio = None if cuda_rate is None else cuda_rate / cpu_rate
    print(
        f"cuda: {'-' if cuda_rate is None else f'{cuda_rate:,.0f}'} rows/s   cpu: {cpu_rate:,.0f} rows/s   "
        f"ratio {'-' if ratio is None else f'{ratio:.1f}x'}"
    )
    print(
        json.dumps(
            {
                "bench": "gpu_training",
                "rows": args.rows,
                "cpu_rows": cpu_rows,
                "epochs": args.epochs,
                "batch_size": params.batch_size,
                "cuda_rows_per_s": None if cuda_rate is None else round(cuda_rate),
                "cpu_rows_per_s": round(cpu_rate),
                "ratio": None if ratio is None else round(ratio, 1),
                "device": name,
                "cpu_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
