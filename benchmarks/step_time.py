"""Median training-step time of the backprop methods, measured side by side.

Builds one CIFAR ResNet with auxiliary heads per method, trains each on the
same synthetic batch in graph mode, and times the steps round-robin so that
load changes on a shared machine hit every method alike. The last line has
the ratios the project tracks:

    mwbp/standard=R1 naive_mwbp/mwbp=R2

Usage:

    python benchmarks/step_time.py                   # ResNet-56, 4 aux heads
    python benchmarks/step_time.py --depth 20 --steps 5
"""

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_mwbp.models import resnet_cifar  # noqa: E402

DEFAULT_METHODS = ("standard", "joint", "mwbp", "naive_mwbp")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=56, help="ResNet depth (6n+2). Default: 56.")
    parser.add_argument("--num-aux", type=int, default=4, help="Auxiliary heads. Default: 4.")
    parser.add_argument("--batch-size", type=int, default=128, help="Images per step. Default: 128.")
    parser.add_argument("--steps", type=int, default=7, help="Timed steps per method. Default: 7.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps per method after tracing. Default: 2.")
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="Comma-separated backprop methods. Default: %(default)s.",
    )
    parser.add_argument(
        "--jit-compile",
        choices=("auto", "true", "false"),
        default="false",
        help="XLA for the train step. Default: false (graph mode without XLA).",
    )
    parser.add_argument(
        "--mixed-precision", action="store_true", help="Use the mixed_float16 policy."
    )
    return parser.parse_args(argv)


def describe_machine():
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    gpus = tf.config.list_physical_devices("GPU")
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"GPUs: {len(gpus)}, devices: {sorted(set(devices))}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )


def build(method, args):
    keras.utils.set_random_seed(0)
    model = resnet_cifar(args.depth, num_aux=args.num_aux)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        backprop=method,
        jit_compile=jit,
    )
    return model


def main(argv=None):
    args = parse_args(argv)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rng = np.random.RandomState(0)
    x = rng.rand(args.batch_size, 32, 32, 3).astype("float32")
    y = rng.randint(0, 10, size=args.batch_size)

    print(f"Machine: {describe_machine()}")
    print(
        f"ResNet-{args.depth} with {args.num_aux} auxiliary heads, batch "
        f"{args.batch_size}, jit_compile={args.jit_compile}, "
        f"mixed precision: {args.mixed_precision}"
    )
    models = {}
    for method in methods:
        start = time.perf_counter()
        model = build(method, args)
        model.train_on_batch(x, y)
        models[method] = model
        print(f"  {method}: traced and ran the first step in {time.perf_counter() - start:.1f} s")
        for _ in range(args.warmup):
            model.train_on_batch(x, y)

    times = {method: [] for method in methods}
    for step in range(args.steps):
        for method in methods:
            start = time.perf_counter()
            models[method].train_on_batch(x, y)
            times[method].append(time.perf_counter() - start)
        print(f"  round {step + 1}/{args.steps} done")

    medians = {m: statistics.median(t) for m, t in times.items()}
    print()
    print("| method | median step (ms) | min (ms) | max (ms) | ratio to standard |")
    print("|---|---|---|---|---|")
    base = medians.get("standard")
    for method in methods:
        ratio = f"{medians[method] / base:.2f}" if base else "n/a"
        print(
            f"| {method} | {1000 * medians[method]:.0f} | {1000 * min(times[method]):.0f} | "
            f"{1000 * max(times[method]):.0f} | {ratio} |"
        )
    print()
    parts = []
    if "mwbp" in medians and "standard" in medians:
        parts.append(f"mwbp/standard={medians['mwbp'] / medians['standard']:.2f}")
    if "naive_mwbp" in medians and "mwbp" in medians:
        parts.append(f"naive_mwbp/mwbp={medians['naive_mwbp'] / medians['mwbp']:.2f}")
    print(" ".join(parts))


if __name__ == "__main__":
    main()
