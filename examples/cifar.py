"""Train CIFAR-10/100 networks with fixed and learnable activations.

Data comes from TensorFlow Datasets through a tf.data pipeline (the ABU
paper's per-image standardisation, 5 % of the training set held out for
validation, optional pad-and-crop plus flip augmentation), or, with
`--synthetic`, from generated CIFAR-shaped data for throughput runs on
machines without internet. Networks and activations: examples/cifar_models.py.

One run writes to `--output/<data>-<model>-<activation>-<optimizer>-s<seed>/`:
`metrics.csv` (per epoch), `result.json` (best and smoothed-best validation
accuracy, test accuracy of the best checkpoint and of the last weights,
training images per second), `best.weights.h5`, `final.weights.h5`,
`backup/` (for `--resume`), and when keras_learnact has the snapshot
callback, the activation snapshots and `evolution.png`. Every invocation
also writes `--output/summary.md` and `summary.csv`: mean and std of the
test accuracy per activation over the runs found in `--output`.

    python examples/cifar.py --model smcn --activation abu --epochs 324
    python examples/cifar.py --sweep abu-paper --seeds 1,2,3 --output runs/
    python examples/cifar.py --synthetic --model resnet18 --mixed-precision \\
        --jit --epochs 2 --activation relu,abu

Multi-worker training: start the same command on every machine with
`--strategy multiworker` and a `TF_CONFIG` naming the cluster and the task.
"""

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cifar_models  # noqa: E402

import keras_learnact as kla  # noqa: E402

try:
    from keras_learnact.callbacks import ActivationSnapshot
except ImportError:  # not in this installation of keras_learnact
    ActivationSnapshot = None
try:
    from keras_learnact.callbacks import PWLURealignment
except ImportError:
    PWLURealignment = None
try:
    from keras_learnact.plotting import plot_evolution
except ImportError:
    plot_evolution = None

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
IMAGE_SHAPE = (32, 32, 3)
OPTIMIZERS = ("adam", "sgdm", "sgdm-he")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
SWEEPS = {"abu-paper": cifar_models.ABU_PAPER_SPECS}


# -- data --------------------------------------------------------------------

def standardize(image):
    """The ABU paper's per-image standardisation.

    `(img - mean(img)) / max(std(img), 1 / sqrt(num_elements))`, which is
    what `tf.image.per_image_standardization` computes.

    Args:
        image: a `uint8` or float image tensor (H, W, C), or a batch of them.

    Returns:
        A float32 tensor of the same shape.

    Example:

    >>> import numpy as np
    >>> out = standardize(np.full((32, 32, 3), 7, "uint8"))
    >>> float(abs(out).max())
    0.0
    """
    return tf.image.per_image_standardization(tf.cast(image, tf.float32))


def augment(image, seed=None):
    """Pads 4 pixels with zeros, crops back to 32x32, flips left-right.

    Args:
        image: a standardised float32 image (32, 32, 3).
        seed: the op-level seed.

    Returns:
        The augmented image.
    """
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    image = tf.image.random_crop(padded, IMAGE_SHAPE, seed=seed)
    return tf.image.random_flip_left_right(image, seed=seed)


def _distribute_options(dataset):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)


def _count(dataset):
    n = int(dataset.cardinality())
    if n < 0:
        n = int(dataset.reduce(0, lambda count, _: count + 1))
    return n


def tfds_splits(name, data_dir=None, validation_percent=5):
    """Loads the train, validation and test splits with TensorFlow Datasets.

    The validation split is the last `validation_percent` % of the training
    set (`train[95%:]`), the training split the rest.

    Args:
        name: `"cifar10"` or `"cifar100"`.
        data_dir: the TFDS data directory (default: TFDS's own).
        validation_percent: the share of the training set held out.

    Returns:
        A dict from `"train"`, `"validation"`, `"test"` to datasets of
        `(uint8 image, int64 label)` pairs.
    """
    import tensorflow_datasets as tfds

    cut = 100 - validation_percent
    splits = {
        "train": f"train[:{cut}%]",
        "validation": f"train[{cut}%:]",
        "test": "test",
    }
    return {
        key: tfds.load(
            name, split=split, as_supervised=True, data_dir=data_dir,
            shuffle_files=False,
        )
        for key, split in splits.items()
    }


def synthetic_splits(num_classes, train_size, eval_size=512, seed=0):
    """Generated CIFAR-shaped data: random uint8 images and labels.

    Args:
        num_classes: the number of label values.
        train_size: the number of training images.
        eval_size: the number of validation and of test images.
        seed: the NumPy seed.

    Returns:
        The same dict as `tfds_splits`.
    """
    rng = np.random.default_rng(seed)

    def make(size):
        images = rng.integers(0, 256, (size, *IMAGE_SHAPE), dtype="uint8")
        labels = rng.integers(0, num_classes, size).astype("int64")
        return tf.data.Dataset.from_tensor_slices((images, labels))

    return {
        "train": make(train_size),
        "validation": make(eval_size),
        "test": make(eval_size),
    }


def pipelines(splits, batch_size, seed, augmentation=False, repeat_eval=False,
              fast_train=False):
    """Turns raw splits into batched training and evaluation pipelines.

    Training: cache the raw images, shuffle (reshuffled every epoch),
    repeat, standardise (and augment), batch (dropping the remainder),
    prefetch. Evaluation: standardise, cache, batch, prefetch.

    Args:
        splits: a dict as returned by `tfds_splits`.
        batch_size: the global batch size.
        seed: the shuffling and augmentation seed.
        augmentation: pad-and-crop plus flip on the training images.
        repeat_eval: repeat the evaluation sets and drop partial batches
            (multi-worker evaluation needs equal steps on every worker).
        fast_train: standardise once and cache whole batches (synthetic
            throughput runs: the input pipeline then costs nothing).

    Returns:
        `(train, validation, test, counts)` where `counts` maps each split
        to its number of examples.
    """
    counts = {key: _count(data) for key, data in splits.items()}
    auto = tf.data.AUTOTUNE
    train = splits["train"]
    if fast_train:
        train = train.map(lambda x, y: (standardize(x), y), auto)
        train = train.batch(batch_size, drop_remainder=True).cache().repeat()
    else:
        train = train.cache().shuffle(
            counts["train"], seed=seed, reshuffle_each_iteration=True
        ).repeat()
        if augmentation:
            train = train.map(
                lambda x, y: (augment(standardize(x), seed), y), auto
            )
        else:
            train = train.map(lambda x, y: (standardize(x), y), auto)
        train = train.batch(batch_size, drop_remainder=True)
    train = _distribute_options(train.prefetch(auto))

    def evaluation(data):
        data = data.map(lambda x, y: (standardize(x), y), auto).cache()
        if repeat_eval:
            data = data.repeat().batch(batch_size, drop_remainder=True)
        else:
            data = data.batch(batch_size)
        return _distribute_options(data.prefetch(auto))

    return (train, evaluation(splits["validation"]),
            evaluation(splits["test"]), counts)


# -- training pieces ---------------------------------------------------------

def make_schedule(name, total_steps, learning_rate=None):
    """The learning rate (a float or a schedule) of a training setting.

    * `adam`: 1e-3 constant (the ABU paper's main setting).
    * `sgdm`: 0.01 decaying linearly to 4e-4 over the run (the ABU paper's
      second setting).
    * `sgdm-he`: 0.1 divided by 10 after 50 % and 75 % of the run (He et
      al.'s CIFAR ResNet schedule, as in the DEU and SLAF set-ups).

    Args:
        name: one of `OPTIMIZERS`.
        total_steps: the number of optimiser steps of the whole run.
        learning_rate: overrides the initial learning rate.

    Returns:
        A float or a `keras.optimizers.schedules.LearningRateSchedule`.

    Example:

    >>> schedule = make_schedule("sgdm", 100)
    >>> round(float(schedule(100)), 6)
    0.0004
    """
    total_steps = max(int(total_steps), 1)
    if name == "adam":
        return learning_rate or 1e-3
    if name == "sgdm":
        return keras.optimizers.schedules.PolynomialDecay(
            learning_rate or 0.01, decay_steps=total_steps,
            end_learning_rate=4e-4, power=1.0,
        )
    if name == "sgdm-he":
        start = learning_rate or 0.1
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [total_steps // 2, (3 * total_steps) // 4],
            [start, start / 10, start / 100],
        )
    raise ValueError(
        f"Unknown optimizer {name!r}. Available: {', '.join(OPTIMIZERS)}."
    )


def make_optimizer(name, total_steps, learning_rate=None):
    """The optimiser of a training setting, with `make_schedule`'s rate.

    `adam` is Adam; `sgdm` and `sgdm-he` are SGD with momentum 0.9.

    Args:
        name: one of `OPTIMIZERS`.
        total_steps: the number of optimiser steps of the whole run.
        learning_rate: overrides the initial learning rate.

    Returns:
        A Keras optimizer.

    Example:

    >>> make_optimizer("sgdm", 1000).momentum
    0.9
    """
    schedule = make_schedule(name, total_steps, learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(schedule)
    return keras.optimizers.SGD(schedule, momentum=0.9)


class Throughput(keras.callbacks.Callback):
    """Measures training images per second, compilation excluded.

    In each epoch the clock starts at the end of the first training batch
    and stops at the end of the last, so tracing, compilation and
    validation are not counted.

    Args:
        batch_size: the global batch size.

    Example:

    >>> meter = Throughput(256)
    >>> meter.images_per_second() is None
    True
    """

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = int(batch_size)
        self.seconds = 0.0
        self.images = 0
        self._start = self._last = None
        self._batches = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._last = None
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._start is None:
            self._start = now
        else:
            self._batches += 1
        self._last = now

    def on_epoch_end(self, epoch, logs=None):
        if self._batches:
            self.seconds += self._last - self._start
            self.images += self._batches * self.batch_size

    def images_per_second(self):
        """Training images per second so far, or None before two batches.

        Returns:
            A float or None.
        """
        return self.images / self.seconds if self.seconds > 0 else None


class SmoothedBestCheckpoint(keras.callbacks.Callback):
    """Saves the weights with the best smoothed validation accuracy.

    The smoothed accuracy of an epoch is the mean of the last `window`
    validation accuracies (the ABU paper selects its models by smoothed
    validation accuracy; its window is not stated, 3 is our choice).

    Args:
        filepath: where the weights go (`.weights.h5`).
        window: the number of epochs averaged.
        history: validation accuracies of earlier epochs (when resuming).

    Example:

    >>> SmoothedBestCheckpoint("best.weights.h5").best is None
    True
    """

    def __init__(self, filepath, window=3, history=()):
        super().__init__()
        self.filepath = filepath
        self.window = int(window)
        self.history = list(history)
        self.best = None
        self.best_epoch = None
        for epoch in range(len(self.history)):
            self._consider(epoch, save=False)

    def _consider(self, epoch, save):
        recent = self.history[max(0, epoch + 1 - self.window): epoch + 1]
        smoothed = float(np.mean(recent))
        if self.best is None or smoothed > self.best:
            self.best, self.best_epoch = smoothed, epoch
            if save:
                self.model.save_weights(self.filepath, overwrite=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if "val_accuracy" not in logs:
            return
        del self.history[epoch:]
        self.history.append(float(logs["val_accuracy"]))
        self._consider(len(self.history) - 1, save=True)


def make_strategy(name):
    """The tf.distribute strategy for `--strategy`, or None for none.

    `auto` mirrors over every visible GPU when there are several and uses no
    strategy otherwise; `mirrored` mirrors over every GPU (every logical CPU
    when there is no GPU); `multiworker` reads the cluster from `TF_CONFIG`.

    Args:
        name: one of `STRATEGIES`.

    Returns:
        A `tf.distribute.Strategy` or None.
    """
    if name == "default":
        return None
    if keras.backend.backend() != "tensorflow":
        if name == "auto":
            return None
        raise ValueError(
            f"--strategy {name} uses tf.distribute and needs the tensorflow "
            f"backend; this run uses {keras.backend.backend()!r} "
            "(set KERAS_BACKEND=tensorflow)."
        )
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs TF_CONFIG set.")
        return _reduce_nests(tf.distribute.MultiWorkerMirroredStrategy())
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        return tf.distribute.MirroredStrategy(gpus) if len(gpus) > 1 else None
    devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def _reduce_nests(strategy):
    """Makes `strategy.reduce` accept what Keras 3's `fit` passes it.

    With MultiWorkerMirroredStrategy, Keras 3 (see keras-team/keras#20585)
    calls `strategy.reduce` with a whole `(x, y)` batch before the first
    step ("Attempt to convert a value (PerReplica...)") and with
    `axis=0` on scalar metric values ("Invalid reduction dimension 0").
    This wrapper reduces leaf by leaf and reduces scalars across replicas
    only, which is what both calls mean.

    Args:
        strategy: a `tf.distribute.MultiWorkerMirroredStrategy`.

    Returns:
        The same strategy, its `reduce` wrapped.
    """
    reduce = strategy.reduce

    def reduce_leaf(reduce_op, leaf, axis):
        if axis is not None:
            local = strategy.experimental_local_results(leaf)[0]
            if getattr(local, "shape", None) is not None and (
                local.shape.rank == 0
            ):
                axis = None
        return reduce(reduce_op, leaf, axis=axis)

    def reduce_each(reduce_op, value, axis=None):
        return tf.nest.map_structure(
            lambda leaf: reduce_leaf(reduce_op, leaf, axis), value
        )

    strategy.reduce = reduce_each
    return strategy


def worker_index():
    """This process's worker index from `TF_CONFIG` (0 without a cluster).

    Returns:
        An int; 0 is the chief, which writes the shared outputs.
    """
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    if task.get("type") == "chief":
        return 0
    offset = 1 if "chief" in config.get("cluster", {}) else 0
    return int(task.get("index", 0)) + offset


def _read_val_history(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [float(row["val_accuracy"]) for row in csv.DictReader(f)
                if row.get("val_accuracy")]


def build_training_state(model, strategy=None):
    """Builds a compiled model's optimizer and metrics before training.

    Keras on TensorFlow without a distribution strategy builds them inside
    the first trace of the train step, and `tf.function`, seeing variables
    created, traces the whole step a second time; built here, it is traced
    once (docs/benchmarks.md, "First training step"). Under a strategy
    Keras builds them itself, before tracing.

    Args:
        model: a compiled model with a known input shape.
        strategy: the run's `tf.distribute` strategy, or None.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.compile("adam", "sparse_categorical_crossentropy",
    ...               metrics=["accuracy"])
    >>> build_training_state(model)
    >>> model.optimizer.built
    True
    """
    if strategy is not None:
        return
    model.optimizer.build(model.trainable_variables)
    # The metrics build on their first update: one of two zero examples,
    # then reset (fit resets them again at every epoch).
    x = np.zeros((2, *model.input_shape[1:]), "float32")
    model.compute_metrics(x, np.zeros((2,), "int32"), model(x), None)
    model.reset_metrics()


def _has_learnable(model):
    return any(
        isinstance(layer, kla.layers.LearnableActivation)
        for layer in model.layers
    )


def run_name(args, activation, seed):
    """The folder name of one run.

    Returns:
        A string such as `cifar10-smcn-abu-adam-s0`.
    """
    data = "synthetic" if args.synthetic else args.dataset
    return f"{data}-{args.model}-{activation}-{args.optimizer}-s{seed}"


def train_one(args, activation, seed, strategy, out_dir):
    """Trains and evaluates one network; writes its files to `out_dir`.

    Args:
        args: the parsed command line.
        activation: the activation name.
        seed: the run's seed (weights, shuffling, dropout).
        strategy: a tf.distribute strategy or None.
        out_dir: the run's folder.

    Returns:
        The result dict also written to `out_dir/result.json`.
    """
    os.makedirs(out_dir, exist_ok=True)
    result_path = os.path.join(out_dir, "result.json")
    csv_path = os.path.join(out_dir, "metrics.csv")
    backup_dir = os.path.join(out_dir, "backup")
    if args.resume and os.path.exists(result_path):
        with open(result_path) as f:
            done = json.load(f)
        if done.get("epochs") == args.epochs:
            print(f"[{activation} s{seed}] done already, skipped")
            return done
    if not args.resume:
        shutil.rmtree(backup_dir, ignore_errors=True)
        for stale in (csv_path, result_path):
            if os.path.exists(stale):
                os.remove(stale)

    keras.utils.set_random_seed(seed)
    num_classes = NUM_CLASSES[args.dataset]
    if args.synthetic:
        splits = synthetic_splits(num_classes, args.synthetic_size, seed=seed)
    else:
        splits = tfds_splits(args.dataset, args.data_dir)
    multiworker = isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    )
    train, val, test, counts = pipelines(
        splits, args.batch_size, seed, augmentation=args.augment,
        repeat_eval=multiworker, fast_train=args.synthetic,
    )
    steps = args.steps_per_epoch or max(counts["train"] // args.batch_size, 1)
    epochs = args.epochs
    if args.max_steps:
        steps = min(steps, args.max_steps)
        epochs = math.ceil(args.max_steps / steps)
    eval_steps = {}
    for key in ("validation", "test"):
        full = math.ceil(counts[key] / args.batch_size)
        if multiworker:
            full = max(counts[key] // args.batch_size, 1)
        eval_steps[key] = min(full, args.eval_steps or full)

    weight_decay = args.weight_decay
    if weight_decay is None:
        weight_decay = 1e-4 if args.optimizer == "sgdm-he" else 0.0
    scope = strategy.scope() if strategy else contextlib.nullcontext()
    with scope:
        model = cifar_models.build_model(
            args.model, activation, num_classes, weight_decay=weight_decay
        )
        model.compile(
            optimizer=make_optimizer(
                args.optimizer, epochs * steps, args.learning_rate
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=bool(args.jit),
            run_eagerly=args.run_eagerly,
        )
        build_training_state(model, strategy)

    best_path = os.path.join(out_dir, "best.weights.h5")
    meter = Throughput(args.batch_size)
    best = SmoothedBestCheckpoint(
        best_path, args.val_window,
        _read_val_history(csv_path) if args.resume else (),
    )
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
        keras.callbacks.CSVLogger(csv_path, append=args.resume),
        best, meter,
    ]
    snapshot_path = None
    learnable = _has_learnable(model)
    if learnable and ActivationSnapshot is not None and args.snapshots:
        snapshot_path = os.path.join(out_dir, "snapshots")
        # A fresh run replaces the file; --resume continues its record
        # (after a crash inside the first epoch too, where initial_epoch
        # is 0).
        callbacks.append(ActivationSnapshot(
            snapshot_path, every_n_epochs=1, overwrite=not args.resume,
            resume=args.resume))
    if activation == "pwlu":
        if PWLURealignment is None:
            print("note: keras_learnact has no PWLURealignment callback; "
                  "PWLU trains without statistics-based realignment")
        else:
            callbacks.append(
                PWLURealignment(warmup_epochs=args.pwlu_warmup_epochs)
            )

    started = time.perf_counter()
    history = model.fit(
        train, epochs=epochs, steps_per_epoch=steps, validation_data=val,
        validation_steps=eval_steps["validation"], callbacks=callbacks,
        verbose=args.verbose,
        shuffle=False,  # `train` reshuffles itself; Keras warns otherwise
    )
    seconds = time.perf_counter() - started
    model.save_weights(os.path.join(out_dir, "final.weights.h5"))
    last = model.evaluate(test, steps=eval_steps["test"], verbose=0,
                          return_dict=True)
    if os.path.exists(best_path):
        model.load_weights(best_path)
    chosen = model.evaluate(test, steps=eval_steps["test"], verbose=0,
                            return_dict=True)

    val_history = _read_val_history(csv_path) or history.history.get(
        "val_accuracy", []
    )
    result = {
        "dataset": "synthetic" if args.synthetic else args.dataset,
        "model": args.model,
        "activation": activation,
        "optimizer": args.optimizer,
        "seed": seed,
        "epochs": args.epochs,
        "trained_epochs": epochs,
        "steps_per_epoch": steps,
        "batch_size": args.batch_size,
        "mixed_precision": bool(args.mixed_precision),
        "jit": bool(args.jit),
        "replicas": strategy.num_replicas_in_sync if strategy else 1,
        "params": int(model.count_params()),
        "best_val_accuracy": max(val_history) if val_history else None,
        "best_smoothed_val_accuracy": best.best,
        "best_epoch": best.best_epoch,
        "test_accuracy": float(chosen["accuracy"]),
        "test_accuracy_last": float(last["accuracy"]),
        "test_loss": float(chosen["loss"]),
        "images_per_second": meter.images_per_second(),
        "train_seconds": seconds,
        "snapshots": snapshot_path,
    }
    if snapshot_path and plot_evolution is not None:
        import matplotlib

        matplotlib.use("Agg")
        figure = plot_evolution(snapshot_path)
        result["evolution_plot"] = os.path.join(out_dir, "evolution.png")
        figure.savefig(result["evolution_plot"], dpi=100)
        import matplotlib.pyplot as plt

        plt.close(figure)
    with open(result_path, "w") as f:
        json.dump(result, f, indent=2)
    speed = result["images_per_second"]
    print(
        f"[{activation} s{seed}] test accuracy {result['test_accuracy']:.4f} "
        f"(last {result['test_accuracy_last']:.4f}), "
        + (f"{speed:,.0f} images/s" if speed else "images/s not measured")
    )
    return result


# -- sweeps ------------------------------------------------------------------

SUMMARY_FIELDS = (
    "activation", "runs", "test_accuracy_mean", "test_accuracy_std",
    "best_val_accuracy_mean", "images_per_second_mean", "params",
)


def aggregate(results):
    """Mean and std of the test accuracy per activation.

    Args:
        results: result dicts (as in `result.json`), any order.

    Returns:
        A list of row dicts with the keys of `SUMMARY_FIELDS`, in the order
        in which activations first appear; `test_accuracy_std` is the sample
        standard deviation (0.0 for a single run).

    Example:

    >>> rows = aggregate([
    ...     {"activation": "relu", "test_accuracy": 0.5, "params": 1},
    ...     {"activation": "relu", "test_accuracy": 0.7, "params": 1},
    ... ])
    >>> round(rows[0]["test_accuracy_mean"], 3), rows[0]["runs"]
    (0.6, 2)
    """
    groups = {}
    for result in results:
        groups.setdefault(result["activation"], []).append(result)
    rows = []
    for activation, runs in groups.items():
        accuracy = np.array([r["test_accuracy"] for r in runs], "float64")
        val = [r["best_val_accuracy"] for r in runs
               if r.get("best_val_accuracy") is not None]
        speed = [r["images_per_second"] for r in runs
                 if r.get("images_per_second")]
        rows.append({
            "activation": activation,
            "runs": len(runs),
            "test_accuracy_mean": float(accuracy.mean()),
            "test_accuracy_std": float(accuracy.std(ddof=1))
            if len(runs) > 1 else 0.0,
            "best_val_accuracy_mean": float(np.mean(val)) if val else None,
            "images_per_second_mean": float(np.mean(speed)) if speed else None,
            "params": runs[0].get("params"),
        })
    return rows


def collect_results(output):
    """Every `result.json` directly under the run folders of `output`.

    Args:
        output: the `--output` folder.

    Returns:
        A list of result dicts, sorted by run folder name.
    """
    results = []
    for name in sorted(os.listdir(output)):
        path = os.path.join(output, name, "result.json")
        if os.path.isfile(path):
            with open(path) as f:
                results.append(json.load(f))
    return results


def write_summary(rows, output, relu_speed=None):
    """Writes `summary.csv` and `summary.md` into `output`.

    Args:
        rows: rows from `aggregate`.
        output: the folder.
        relu_speed: ReLU's images/s, to add a speed ratio column.

    Returns:
        The Markdown table as a string.
    """
    with open(os.path.join(output, "summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)

    def fmt(value, spec):
        return "" if value is None else format(value, spec)

    lines = [
        "| activation | runs | test accuracy (mean ± std) | best val "
        "accuracy | images/s | speed / ReLU | params |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        speed = row["images_per_second_mean"]
        ratio = speed / relu_speed if speed and relu_speed else None
        lines.append(
            f"| {row['activation']} | {row['runs']} | "
            f"{row['test_accuracy_mean']:.4f} ± "
            f"{row['test_accuracy_std']:.4f} | "
            f"{fmt(row['best_val_accuracy_mean'], '.4f')} | "
            f"{fmt(speed, ',.0f')} | {fmt(ratio, '.2f')} | "
            f"{fmt(row['params'], ',')} |"
        )
    table = "\n".join(lines) + "\n"
    with open(os.path.join(output, "summary.md"), "w") as f:
        f.write(table)
    return table


# -- command line ------------------------------------------------------------

def _int_list(text):
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv=None):
    """Parses the command line (see `--help`).

    Args:
        argv: the arguments, without the program name; default sys.argv.

    Returns:
        An `argparse.Namespace`.
    """
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", choices=sorted(NUM_CLASSES),
                        default="cifar10")
    parser.add_argument("--model", choices=cifar_models.MODELS,
                        default="smcn")
    parser.add_argument(
        "--activation", default="relu",
        help="an activation name or a comma list (a sweep); names: "
        + ", ".join(cifar_models.ACTIVATIONS),
    )
    parser.add_argument("--sweep", choices=sorted(SWEEPS),
                        help="run a named list of activations (abu-paper: "
                        "the ABU paper's 17 specs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=_int_list,
                        help="comma list of seeds (overrides --seed)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    parser.add_argument("--learning-rate", type=float,
                        help="override the schedule's initial rate")
    parser.add_argument("--weight-decay", type=float,
                        help="kernel weight decay (default 1e-4 for sgdm-he, "
                        "else 0)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps-per-epoch", type=int,
                        help="default: one pass over the training split")
    parser.add_argument("--max-steps", type=int,
                        help="train this many steps in all (sets the epochs; "
                        "the ABU paper: 60000)")
    parser.add_argument("--eval-steps", type=int,
                        help="cap validation and test batches (smoke runs)")
    parser.add_argument("--val-window", type=int, default=3,
                        help="epochs averaged for checkpoint selection")
    parser.add_argument("--augment", action="store_true",
                        help="pad-4-and-crop plus horizontal flips")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_float16 on GPU, mixed_bfloat16 on CPU")
    parser.add_argument("--jit", action="store_true",
                        help="compile the train step with XLA")
    parser.add_argument("--run-eagerly", action="store_true",
                        help="no tf.function: for debugging and quick smoke "
                        "runs of a few steps")
    parser.add_argument("--strategy", choices=STRATEGIES, default="auto")
    parser.add_argument("--output", default="runs/cifar")
    parser.add_argument("--resume", action="store_true",
                        help="continue runs from output's backups; skip "
                        "finished ones")
    parser.add_argument("--data-dir", help="TensorFlow Datasets data_dir")
    parser.add_argument("--synthetic", action="store_true",
                        help="generated CIFAR-shaped data, no download")
    parser.add_argument("--synthetic-size", type=int, default=12800)
    parser.add_argument("--no-snapshots", dest="snapshots",
                        action="store_false")
    parser.add_argument("--pwlu-warmup-epochs", type=int, default=5)
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    args = parser.parse_args(argv)
    names = (SWEEPS[args.sweep] if args.sweep
             else [a.strip() for a in args.activation.split(",") if a.strip()])
    for name in names:
        try:
            cifar_models.make_activation(name)
        except ValueError as error:
            parser.error(str(error))
    args.activations = list(names)
    args.seed_list = args.seeds or [args.seed]
    if args.synthetic and args.augment:
        print("note: --augment is ignored with --synthetic")
    return args


def main(argv=None):
    """Runs every (activation, seed) pair and writes the summary.

    Args:
        argv: command-line arguments without the program name.

    Returns:
        The list of result dicts of this invocation.
    """
    args = parse_args(argv)
    strategy = make_strategy(args.strategy)
    index = worker_index() if args.strategy == "multiworker" else 0
    output = args.output
    if index:  # non-chief workers write apart from the chief
        output = os.path.join(output, "_workers", f"worker-{index}")
    os.makedirs(output, exist_ok=True)
    if args.mixed_precision:
        gpu = bool(tf.config.list_physical_devices("GPU"))
        policy = "mixed_float16" if gpu else "mixed_bfloat16"
    else:
        policy = "float32"
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    results = []
    try:
        for activation in args.activations:
            for seed in args.seed_list:
                run_dir = os.path.join(output, run_name(args, activation, seed))
                results.append(
                    train_one(args, activation, seed, strategy, run_dir)
                )
                keras.backend.clear_session()
    finally:
        keras.config.set_dtype_policy(previous)
    setting = ("dataset", "model", "optimizer", "mixed_precision", "jit")
    mine = {key: results[0][key] for key in setting}
    rows = aggregate([
        r for r in collect_results(output)
        if all(r.get(key) == value for key, value in mine.items())
    ])
    relu = [r["images_per_second_mean"] for r in rows
            if r["activation"] == "relu"]
    print(write_summary(rows, output, relu[0] if relu else None))
    return results


if __name__ == "__main__":
    main()
