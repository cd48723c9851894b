"""Train a keras.applications network on CIFAR with learnable activations.

Builds a `keras.applications` network for 32x32 images (MobileNetV2 by
default; ResNet50, MobileNetV3Small/Large or EfficientNetB0 by `--model`),
optionally loads its saved weights (`--weights`), replaces its activations
with a learnable family (`keras_learnact.replace_activations`), and trains
it on CIFAR-10/100 from TensorFlow Datasets, or on generated CIFAR-shaped
data with `--synthetic` (no download). The data pipeline, optimisers,
throughput meter and distribution strategy are examples/cifar.py's,
imported from it.

By default only the network's activations are replaced (`--targets`), not
the gates of its squeeze-and-excite blocks (EfficientNet's sigmoid,
MobileNetV3's hard sigmoid, which is a `ReLU(6)` of `x + 3`); `--targets
all` replaces every fixed activation. Where the family accepts
`initial_function=`, each unit starts as the function it replaces, so the
converted network computes what the original did (the summary states the
largest difference of the logits on one batch): fine-tuning a trained
network starts from its accuracy.

One run writes `--output/<data>-<model>-<activation>-s<seed>/`:
`result.json`, `final.weights.h5`, and the activation snapshots
(`snapshots.npz`, see `keras_learnact.snapshots`).

    python examples/applications.py --model mobilenetv2 --activation pwlu
    python examples/applications.py --model resnet50 --activation abu \\
        --weights resnet50_relu.weights.h5 --epochs 5
    python examples/applications.py --synthetic --synthetic-size 512 \\
        --model efficientnetb0 --activation adaptive-scaling --epochs 1
"""

import argparse
import collections
import contextlib
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cifar  # noqa: E402

import keras_learnact as kla  # noqa: E402
from keras_learnact.callbacks import ActivationSnapshot  # noqa: E402
from keras_learnact.callbacks import PWLURealignment  # noqa: E402

IMAGE_SHAPE = cifar.IMAGE_SHAPE


def _application(name):
    def build(num_classes, alpha=1.0):
        common = dict(weights=None, input_shape=IMAGE_SHAPE,
                      classes=num_classes, classifier_activation=None)
        if name == "resnet50":
            return keras.applications.ResNet50(**common)
        if name == "mobilenetv2":
            return keras.applications.MobileNetV2(alpha=alpha, **common)
        if name == "efficientnetb0":
            # Its own Rescaling(1/255) and (unadapted, identity)
            # Normalization come first; the batch norms absorb the scale.
            return keras.applications.EfficientNetB0(**common)
        cls = {"mobilenetv3small": keras.applications.MobileNetV3Small,
               "mobilenetv3large": keras.applications.MobileNetV3Large}[name]
        # The images come standardised: no Rescaling inside.
        return cls(alpha=alpha, include_preprocessing=False, **common)

    return build


MODELS = ("mobilenetv2", "resnet50", "mobilenetv3small", "mobilenetv3large",
          "efficientnetb0")
APPLICATIONS = {name: _application(name) for name in MODELS}
# The activations of each network, its squeeze-and-excite gates aside.
DEFAULT_TARGETS = {
    "mobilenetv2": ["relu6"],
    "resnet50": ["relu"],
    "mobilenetv3small": ["relu", "hard_swish"],
    "mobilenetv3large": ["relu", "hard_swish"],
    "efficientnetb0": ["swish"],
}
FAMILIES = {
    "pwlu": "PWLU",
    "abu": "ABU",
    "adaptive-scaling": "AdaptiveScaling",
    "deu": "DEU",
    "slaf": "SLAF",
    "rational": "Rational",
}


def starts_as_original(family):
    """Whether a family's units can start as the function they replace.

    Args:
        family: a key of `FAMILIES`.

    Returns:
        True where the layer accepts `initial_function=`.

    Examples:

    >>> starts_as_original("adaptive-scaling")
    True
    """
    if family == "adaptive-scaling":
        return True  # AdaptiveScaling(name) is that function times alpha = 1
    try:
        getattr(kla, FAMILIES[family])(initial_function="relu")
    except (TypeError, ValueError):
        return False
    return True


def make_factory(family):
    """The `replace_activations` factory of a family.

    Each unit starts as the activation it replaces where the family allows
    (`starts_as_original`), otherwise as the family's default.

    Args:
        family: a key of `FAMILIES`.

    Returns:
        A function from an activation name to a new layer.

    Examples:

    >>> type(make_factory("adaptive-scaling")("relu")).__name__
    'AdaptiveScaling'
    """
    cls = getattr(kla, FAMILIES[family])
    if family == "adaptive-scaling":
        return lambda name: cls(name)
    if starts_as_original(family):
        return lambda name: cls(initial_function=name)
    return lambda name: cls()


def convert(model_name, family, num_classes, targets=None, weights=None,
            alpha=1.0):
    """Builds a network, loads its weights, replaces its activations.

    Args:
        model_name: a key of `APPLICATIONS`.
        family: a key of `FAMILIES`, or `"original"` for no replacement.
        num_classes: the number of classes.
        targets: the activation names to replace; None for the network's
            `DEFAULT_TARGETS`, `["all"]` for every fixed activation.
        weights: optional path of the original network's saved weights
            (`save_weights`), loaded before the conversion.
        alpha: the width multiplier of the MobileNets.

    Returns:
        `(original, converted)`; for `"original"` both are the same model.
    """
    build = APPLICATIONS[model_name]
    kwargs = {"alpha": alpha} if model_name.startswith("mobilenet") else {}
    original = build(num_classes, **kwargs)
    if weights:
        original.load_weights(weights)
    if family == "original":
        return original, original
    if targets is None:
        targets = DEFAULT_TARGETS[model_name]
    if list(targets) == ["all"]:
        targets = None
    converted = kla.replace_activations(original, make_factory(family),
                                        targets=targets)
    return original, converted


def _policy(mixed_precision):
    if not mixed_precision:
        return "float32"
    gpu = bool(tf.config.list_physical_devices("GPU"))
    return "mixed_float16" if gpu else "mixed_bfloat16"


def train(args):
    """Converts, trains and evaluates one network; writes its files.

    Args:
        args: the parsed command line (`parse_args`).

    Returns:
        The result dict, also written to `result.json`.
    """
    keras.utils.set_random_seed(args.seed)
    num_classes = cifar.NUM_CLASSES[args.dataset]
    data = "synthetic" if args.synthetic else args.dataset
    out_dir = os.path.join(
        args.output, f"{data}-{args.model}-{args.activation}-s{args.seed}")
    os.makedirs(out_dir, exist_ok=True)
    if args.synthetic:
        splits = cifar.synthetic_splits(num_classes, args.synthetic_size,
                                        eval_size=args.synthetic_eval_size,
                                        seed=args.seed)
    else:
        splits = cifar.tfds_splits(args.dataset, args.data_dir)
    train_data, val, test, counts = cifar.pipelines(
        splits, args.batch_size, args.seed, augmentation=args.augment,
        fast_train=args.synthetic,
    )
    steps = args.steps_per_epoch or max(counts["train"] // args.batch_size, 1)
    eval_steps = {
        key: min(-(-counts[key] // args.batch_size),
                 args.eval_steps or counts[key])
        for key in ("validation", "test")
    }

    strategy = cifar.make_strategy(args.strategy)
    scope = strategy.scope() if strategy else contextlib.nullcontext()
    with scope:
        original, model = convert(
            args.model, args.activation, num_classes, targets=args.targets,
            weights=args.weights, alpha=args.alpha)
        model.compile(
            optimizer=cifar.make_optimizer(
                args.optimizer, args.epochs * steps, args.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            run_eagerly=args.run_eagerly,
        )
        # One trace of the train step on TensorFlow, not two.
        cifar.build_training_state(model, strategy)
    replaced = getattr(model, "replaced_activations", ())
    images = next(iter(val))[0].numpy()
    difference = None
    if model is not original:
        difference = float(np.max(np.abs(
            keras.ops.convert_to_numpy(original(images, training=False))
            - keras.ops.convert_to_numpy(model(images, training=False)))))

    meter = cifar.Throughput(args.batch_size)
    callbacks = [meter]
    snapshot_path = None
    if replaced and args.snapshots:
        snapshot_path = os.path.join(out_dir, "snapshots.npz")
        callbacks.append(ActivationSnapshot(snapshot_path, overwrite=True))
    if args.activation == "pwlu":
        callbacks.append(
            PWLURealignment(warmup_epochs=args.pwlu_warmup_epochs))
    started = time.perf_counter()
    model.fit(train_data, epochs=args.epochs, steps_per_epoch=steps,
              validation_data=val, validation_steps=eval_steps["validation"],
              callbacks=callbacks, verbose=args.verbose, shuffle=False)
    seconds = time.perf_counter() - started
    model.save_weights(os.path.join(out_dir, "final.weights.h5"))
    scores = model.evaluate(test, steps=eval_steps["test"], verbose=0,
                            return_dict=True)
    result = {
        "dataset": data,
        "model": args.model,
        "activation": args.activation,
        "seed": args.seed,
        "epochs": args.epochs,
        "steps_per_epoch": steps,
        "batch_size": args.batch_size,
        "mixed_precision": bool(args.mixed_precision),
        "weights": args.weights,
        "replaced": dict(collections.Counter(r.activation for r in replaced)),
        "params_original": int(original.count_params()),
        "params": int(model.count_params()),
        "conversion_difference": difference,
        "test_accuracy": float(scores["accuracy"]),
        "test_loss": float(scores["loss"]),
        "images_per_second": meter.images_per_second(),
        "train_seconds": seconds,
        "snapshots": snapshot_path,
    }
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(summary(result))
    return result


def summary(result):
    """A short text summary of one run.

    Args:
        result: a result dict as `train` returns it.

    Returns:
        A multi-line string.

    Examples:

    >>> print(summary({"model": "resnet50", "activation": "abu",
    ...     "dataset": "synthetic", "replaced": {"relu": 49},
    ...     "params_original": 10, "params": 59,
    ...     "conversion_difference": None, "test_accuracy": 0.5,
    ...     "test_loss": 1.0, "images_per_second": None}))
    resnet50 with abu on synthetic
      replaced: 49 relu
      parameters: 10 -> 59
      test accuracy 0.5000, loss 1.0000, images/s not measured
    """
    replaced = ", ".join(
        f"{count} {name}" for name, count in result["replaced"].items()
    ) or "nothing"
    lines = [
        f"{result['model']} with {result['activation']} on "
        f"{result['dataset']}",
        f"  replaced: {replaced}",
        f"  parameters: {result['params_original']:,} -> "
        f"{result['params']:,}",
    ]
    if result["conversion_difference"] is not None:
        lines.append(
            "  largest logit change made by the conversion: "
            f"{result['conversion_difference']:.3g}")
    speed = result["images_per_second"]
    lines.append(
        f"  test accuracy {result['test_accuracy']:.4f}, loss "
        f"{result['test_loss']:.4f}, "
        + (f"{speed:,.0f} images/s" if speed else "images/s not measured"))
    return "\n".join(lines)


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
    parser.add_argument("--model", choices=MODELS, default="mobilenetv2")
    parser.add_argument("--activation", choices=(*FAMILIES, "original"),
                        default="pwlu",
                        help="the learnable family; original: no change")
    parser.add_argument(
        "--targets",
        help="comma list of activation names to replace, or 'all' "
        "(default: the network's activations, squeeze-and-excite gates "
        "aside)")
    parser.add_argument("--weights", help="the original network's weights "
                        "(save_weights), loaded before the conversion")
    parser.add_argument("--alpha", type=float, default=1.0,
                        help="MobileNet width multiplier")
    parser.add_argument("--dataset", choices=sorted(cifar.NUM_CLASSES),
                        default="cifar10")
    parser.add_argument("--data-dir", help="TensorFlow Datasets data_dir")
    parser.add_argument("--synthetic", action="store_true",
                        help="generated CIFAR-shaped data, no download")
    parser.add_argument("--synthetic-size", type=int, default=12800)
    parser.add_argument("--synthetic-eval-size", type=int, default=512)
    parser.add_argument("--augment", action="store_true",
                        help="pad-4-and-crop plus horizontal flips")
    parser.add_argument("--optimizer", choices=cifar.OPTIMIZERS,
                        default="adam")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps-per-epoch", type=int,
                        help="default: one pass over the training split")
    parser.add_argument("--eval-steps", type=int,
                        help="cap validation and test batches (smoke runs)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_float16 on GPU, mixed_bfloat16 on CPU")
    parser.add_argument("--strategy", choices=cifar.STRATEGIES,
                        default="auto")
    parser.add_argument("--run-eagerly", action="store_true")
    parser.add_argument("--pwlu-warmup-epochs", type=int, default=5)
    parser.add_argument("--no-snapshots", dest="snapshots",
                        action="store_false")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/applications")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    args = parser.parse_args(argv)
    if args.targets is not None:
        args.targets = [t.strip() for t in args.targets.split(",")
                        if t.strip()]
        known = (*kla.convert.ACTIVATION_NAMES, *kla.convert.ALIASES)
        for name in args.targets:
            if name not in known and args.targets != ["all"]:
                parser.error(f"Unknown target {name!r}. Allowed: all, or "
                             f"names from {', '.join(known)}.")
    return args


def main(argv=None):
    """Runs one training from the command line.

    Args:
        argv: command-line arguments without the program name.

    Returns:
        The result dict.
    """
    args = parse_args(argv)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(_policy(args.mixed_precision))
    try:
        return train(args)
    finally:
        keras.config.set_dtype_policy(previous)


if __name__ == "__main__":
    main()
