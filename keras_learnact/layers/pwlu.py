"""The Piecewise Linear Unit (PWLU) with statistics-based realignment."""

import functools

import keras
import numpy as np
from keras import ops

from keras_learnact.layers import _initial
from keras_learnact.layers._fused import compiled
from keras_learnact.layers._fused import fuse
from keras_learnact.layers._fused import with_gradient
from keras_learnact.layers._fused import xla_kernel
from keras_learnact.layers.base import LearnableActivation
from keras_learnact.layers.base import check_number
from keras_learnact.layers.base import cond

# The smallest range width `BR - BL` used in the evaluation. A learned or
# realigned range that is narrower (a constant channel gives sigma = 0), or
# even inverted, is evaluated as `[BL, BL + MIN_WIDTH]`, so the interval
# length `d` is never zero and nothing divides by zero.
MIN_WIDTH = 1e-4
# Phase I looks ReLU up with `start = 0` and this `1 / d`: every positive
# normal float32 lands past index 0 (the slope-0 segment), so the phase-I
# output is exactly `relu(x)`.
RELU_INVERSE_STEP = 2.0**126
# One batch's mean enters the running mean at most this many reference
# scales `max(|mu| + sigma, MIN_WIDTH)` from it, and its standard deviation
# at most this many reference scales (see "Statistics that one batch cannot
# spoil" in the class docstring).
OUTLIER_BOUND = 4.0


# The flattened tables of a layer stay below 2^23 entries (a float32 holds
# every whole number up to 2^23, so each index is exact in float32 too).
TABLE_LIMIT = 2**23

# A float32 holding a whole number `0 <= v < 2^23`, times 2^-12 plus 2^11,
# has `v` in its mantissa bits (float32s in [2^11, 2^12) are 2^-12 apart):
# viewed as int32 it is `v + INDEX_BASE_BITS`. The usual form, `v + 2^23`,
# needs a constant that TensorFlow Lite's float16 quantisation, which
# stores every float constant as float16, saturates to 65504 (and the
# lookup then read outside its table); 2^-12 and 2^11 are exact in float16.
INDEX_SCALE = 2.0**-12
INDEX_BASE = 2.0**11
INDEX_BASE_BITS = 0x45000000

# The integer dtype whose values hold a float table's bits, by item size:
# TensorFlow gathers the tables as integers, which TensorFlow Lite's
# quantisations leave exact (see `take`).
_BITS_DTYPES = {2: "int16", 4: "int32", 8: "int64"}


def segment_index(u, top, row_starts=None):
    """`floor(u)` clipped to `[0, top]`, plus `row_starts`, as int32.

    Any `u` gives a valid index: `-inf` and NaN give 0, `+inf` gives `top`
    (the lookup's output for a NaN input is then NaN, not an error).

    On the XLA backends (TensorFlow's fused kernels, JAX) in float32 the
    index is kept in floating point and its integer read from the bits of
    `v 2^-12 + 2^11` rather than with a cast: XLA compiles a float-to-int
    cast with saturation checks, and every integer operation adds to a loop
    that the table lookup already keeps from being vectorised (measured on
    a 2-core CPU, 128x32x32x32 input: a forward kernel of 10.7 ms with the
    cast and integer clipping, 8.2 ms with the bits of `v + 2^23`). The
    form `v 2^-12 + 2^11` costs one multiply more than `v + 2^23`, which
    did not show in the layer's forward and backward times on TensorFlow
    and JAX (fastest of 40-60 interleaved runs each; the cast alone
    measured up to 10 % slower there), and all its constants are exact in
    float16, so that TensorFlow Lite's float16 quantisation keeps the
    index exact (for `top` up to 2048).

    Args:
        u: a float tensor.
        top: the largest index before `row_starts`, a Python int below
            2^23.
        row_starts: an optional tensor of whole numbers (integer or float)
            that broadcasts with `u`, added to the index in int32 (the row
            of a flattened per-channel table).

    Returns:
        An int32 tensor shaped like `u`.

    Examples:

    >>> from keras import ops
    >>> u = ops.convert_to_tensor([-2.0, 0.5, 2.99, 7.0, float("inf")])
    >>> ops.convert_to_numpy(segment_index(u, 5)).tolist()
    [0, 0, 2, 5, 5]
    >>> nan = ops.convert_to_tensor([float("nan")])
    >>> ops.convert_to_numpy(segment_index(nan, 5)).tolist()
    [0]
    """
    # `u > 0` is False for NaN; the floor of a clipped value is exact.
    u = ops.where(u > 0, u, 0.0)
    backend = keras.backend.backend()
    if backend == "torch":
        # torch.compile(dynamic=True) takes `top` for a symbolic integer,
        # which `ops.minimum` cannot trace (a graph break per call).
        v = ops.floor(ops.clip(u, 0.0, top))
    else:
        v = ops.floor(ops.minimum(u, float(top)))
    v = ops.stop_gradient(v)
    offset = 0
    if row_starts is not None:
        offset = ops.cast(row_starts, "int32")
    if (keras.backend.standardize_dtype(v.dtype) != "float32"
            or backend not in ("tensorflow", "jax")):
        return ops.cast(v, "int32") + offset  # no XLA: the cast is as fast
    if backend == "tensorflow":
        import tensorflow as tf

        bits = tf.bitcast(v * INDEX_SCALE + INDEX_BASE, tf.int32)
    else:
        import jax

        bits = jax.lax.bitcast_convert_type(
            v * INDEX_SCALE + INDEX_BASE, "int32")
    return bits + (offset - INDEX_BASE_BITS)


def take(table, index):
    """`table[index]` for a 1-D `table` and valid int32 indices.

    Keras's `ops.take` accepts negative indices, which costs a compare and
    a select per element inside TensorFlow's fused lookup, and on JAX it
    also fills out-of-range reads with NaN (two more compares and a
    select); `segment_index` never makes such an index, so TensorFlow and
    JAX gather directly.

    On TensorFlow a floating table is gathered as the integers with its
    bits and viewed as floats again (the same values, and free inside an
    XLA kernel): TensorFlow Lite's converter folds the tables of a
    converted model into constants, and its float16 and dynamic-range
    quantisations would store them as float16 or int8 (measured: errors
    up to a third of the output with the int8 tables of 100 channels),
    but leave integer constants alone. TensorFlow's gradient of the lookup
    is written by hand (`_lookup_functions`), so nothing
    differentiates the bits.

    Args:
        table: a 1-D tensor.
        index: an int32 tensor of indices in `[0, len(table))`.

    Returns:
        A tensor shaped like `index`.

    Examples:

    >>> from keras import ops
    >>> table = ops.convert_to_tensor([10.0, 20.0, 30.0])
    >>> index = ops.convert_to_tensor([2, 0])
    >>> ops.convert_to_numpy(take(table, index)).tolist()
    [30.0, 10.0]
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not table.dtype.is_floating:
            return tf.gather(table, index)
        bits = _BITS_DTYPES[table.dtype.size]
        return tf.bitcast(tf.gather(tf.bitcast(table, bits), index),
                          table.dtype)
    if keras.backend.backend() == "jax":
        import jax.numpy as jnp

        return jnp.take(table, index, mode="clip")
    return ops.take(table, index)


def segments(layout, num_intervals, x, start, inverse_step):
    """The row of the flattened tables that each element of `x` uses.

    Args:
        layout: the `Layout` of the parameters against `x`.
        num_intervals: `N`; each channel's table has `N + 2` rows.
        x: the input.
        start: the left end of the grid per channel (`BL`, or 0 for
            phase I's ReLU).
        inverse_step: `1 / d` per channel.

    Returns:
        An int32 tensor shaped like `x`.

    Examples:

    >>> from keras import ops
    >>> from keras_learnact.layers.base import Layout
    >>> x = ops.convert_to_tensor([[-1.0, 0.5], [2.5, 9.0]])
    >>> rows = segments(Layout(2, 1, 2), 4, x, ops.zeros((2,)),
    ...                 ops.ones((2,)))
    >>> ops.convert_to_numpy(rows).tolist()
    [[0, 6], [2, 11]]
    """
    u = (x - layout.broadcast(start)) * layout.broadcast(inverse_step)
    row_starts = None
    if layout.channel is not None:
        row_starts = layout.broadcast(
            ops.arange(layout.channels, dtype="int32") * (num_intervals + 2))
    return segment_index(u, num_intervals + 1, row_starts)


@functools.lru_cache(maxsize=None)
def _lookup_kernel(layout, num_intervals):
    """`_lookup_functions(layout, num_intervals)` fused; one for every
    layer with this layout and number of intervals.

    TensorFlow: XLA kernels with the hand-written backward pass. JAX: the
    lookup, differentiated with the train step. PyTorch: the lookup
    compiled, with the hand-written backward pass in its counted form
    (elementwise part compiled, table sums as weighted bin counts): its
    compiled autodiff sums the tables' gradient with atomic adds, which
    on a CPU took 149 ms against 12 ms for two bin counts of a
    128x32x32x32 input (each table row is hit by thousands of
    elements), and Keras's segment sum makes six passes there."""
    lookup, lookup_gradient, counted_gradient = _lookup_functions(
        layout, num_intervals)
    if keras.backend.backend() == "torch":
        return with_gradient(
            compiled(lookup),
            lambda upstream, y, *args: counted_gradient(upstream, *args))
    return fuse(lookup, gradient=lookup_gradient)


@functools.lru_cache(maxsize=None)
def _lookup_functions(layout, num_intervals):
    """PWLU's lookup `x * S[j] + O[j]` and two forms of its backward pass,
    functions of tensors alone for parameters laid out as `layout` (a
    `Layout`) with `num_intervals` intervals.

    The backward pass (TensorFlow's, in two XLA kernels; PyTorch's
    `counted_gradient` keeps the index from the first and counts):
    `dx = upstream * S[j]`; the tables' gradients are segment sums of
    `upstream * x` and `upstream` over the rows `j`; the index is
    piecewise constant, so `start` and `1 / d` get none. Written by hand
    because XLA's derivative of the gather put three 16 MB temporaries
    (the index, `upstream * x` and a copy of `upstream`) into one 48 MB
    scratch buffer for a 128x32x32x32 input: above glibc's 32 MB limit
    for reusing freed memory, so every step mapped fresh pages (12 288
    page faults, about 20 of its 35 ms). Here the products are the first
    kernel's outputs, and the second kernel's only scratch is the index.
    """
    count = layout.channels * (num_intervals + 2)  # rows of the tables

    def rows(x, start, inverse_step):
        return segments(layout, num_intervals, x, start, inverse_step)

    def lookup(x, start, inverse_step, slopes, offsets):
        index = rows(x, start, inverse_step)
        outputs = (x * take(ops.reshape(slopes, (-1,)), index)
                   + take(ops.reshape(offsets, (-1,)), index))
        if keras.backend.backend() == "jax":
            # The same values: a NaN input gives NaN either way. XLA on the
            # CPU folds a trailing multiply-add into the next convolution's
            # YNNPACK fusion, which leaves the two gathers as two passes
            # that each redo the index; it does not fold a select, so the
            # lookup stays one pass (measured, the model benchmark's
            # PWLU-16 with `jit`: predict 1.66x -> 1.52x ReLU; train and
            # TensorFlow unchanged).
            outputs = ops.where(x == x, outputs, x)
        return outputs

    def table_sums(x, weighted, upstream, start, inverse_step):
        index = ops.reshape(rows(x, start, inverse_step), (-1,))
        return (ops.segment_sum(weighted, index, num_segments=count),
                ops.segment_sum(upstream, index, num_segments=count))


    def gradients(dx, d_slopes, d_offsets, start, inverse_step, slopes,
                  offsets):
        return (dx, ops.zeros_like(start), ops.zeros_like(inverse_step),
                ops.reshape(ops.cast(d_slopes, slopes.dtype),
                            ops.shape(slopes)),
                ops.reshape(ops.cast(d_offsets, offsets.dtype),
                            ops.shape(offsets)))

    def indexed_products(upstream, x, start, inverse_step, slopes):
        index = rows(x, start, inverse_step)
        dx = upstream * take(ops.reshape(slopes, (-1,)), index)
        return dx, upstream * x, index

    def products(upstream, x, start, inverse_step, slopes):
        # Without the index: XLA drops it from the kernel, whose scratch
        # then holds nothing of the input's size.
        return indexed_products(upstream, x, start, inverse_step, slopes)[:2]

    products_kernel = xla_kernel(products)
    table_sums_kernel = xla_kernel(table_sums)
    indexed_kernel = compiled(indexed_products)

    def lookup_gradient(upstream, x, start, inverse_step, slopes, offsets):
        dx, weighted = products_kernel(upstream, x, start, inverse_step,
                                       slopes)
        d_slopes, d_offsets = table_sums_kernel(
            x, ops.reshape(weighted, (-1,)), ops.reshape(upstream, (-1,)),
            start, inverse_step,
        )
        return gradients(dx, d_slopes, d_offsets, start, inverse_step,
                         slopes, offsets)

    def counted_gradient(upstream, x, start, inverse_step, slopes, offsets):
        # The same sums, the index kept from the elementwise kernel.
        dx, weighted, index = indexed_kernel(upstream, x, start,
                                             inverse_step, slopes)
        index = ops.reshape(index, (-1,))
        d_slopes = ops.bincount(index, weights=ops.reshape(weighted, (-1,)),
                                minlength=count)
        d_offsets = ops.bincount(index, weights=ops.reshape(upstream, (-1,)),
                                 minlength=count)
        return gradients(dx, d_slopes, d_offsets, start, inverse_step,
                         slopes, offsets)

    return lookup, lookup_gradient, counted_gradient


@keras.saving.register_keras_serializable(package="keras_learnact")
class PWLU(LearnableActivation):
    """Piecewise Linear Unit: a learned piecewise-linear function.

    Formula, with `N` intervals of length `d = (BR - BL) / N` between the
    bounds `BL < BR`, breakpoints `B_i = BL + i d` with heights `Y^0..Y^N`,
    and outer slopes `KL`, `KR`:

        x <  BL:  PWLU(x) = (x - BL) KL + Y^0
        x >= BR:  PWLU(x) = (x - BR) KR + Y^N
        else:     u = (x - BL) / d,  i = clip(floor(u), 0, N - 1),  r = u - i
                  PWLU(x) = (1 - r) Y^i + r Y^{i+1}

    The unit is continuous in `x` and in every parameter. It is evaluated in
    the efficient form: from the parameters, each of the `N + 2` segments
    `j` (left tail, the `N` intervals, right tail) gets a slope `S_j` and an
    offset `O_j`, and `PWLU(x) = x S_j + O_j` with one index computation
    `j = clip(floor((x - BL) / d), -1, N)` and one table lookup, whatever
    `N` is. The tables are computed from the parameters with `keras.ops`, so
    every parameter (bounds, heights, slopes) receives its gradient.

    A range narrower than `MIN_WIDTH = 1e-4` (or inverted, `BR <= BL`) is
    evaluated as `[BL, BL + 1e-4]`: output and gradients stay finite.

    Initialisation: the ReLU. With `BL = -BR`, an even `N`, `KL = 0`, `KR = 1`
    and `Y^i = relu(B_i)`, 0 is a breakpoint and the unit is exactly ReLU.
    With an odd `N` (or asymmetric `initial_bounds`) the initial function is
    the piecewise-linear interpolant of ReLU on the grid, which differs from
    ReLU on the interval that contains 0.

    Starting as another function (`initial_function=`, or `fit_to` later):
    the bounds become the fitted range (`initial_range`, default (-4, 4),
    which then takes the place of `initial_bounds`), the heights the
    function's values at the breakpoints, and `KL`, `KR` its slopes just
    outside the bounds; exact for ReLU, ReLU6, leaky ReLU and the identity
    (and hard swish at the breakpoints) when their kinks are breakpoints,
    as with the default range and an even `N`. Such a unit starts in
    phase II, as with `start_realigned=True`: phase I computes ReLU, and a
    unit asked to start as, say, swish must compute swish from the first
    call (a converted model keeps the original's function) and learn from
    there. The realignment callback leaves it alone (it realigns only
    units still in phase I); `realign()`, called by hand, resets it to its
    initial function (not ReLU) on the statistics' grid.

    Training follows the paper's two phases:

    * Phase I (statistics): the unit computes exactly `relu(x)`, no gradient
      reaches its parameters (so optimisers without weight decay leave them
      unchanged), and in training calls it keeps the running mean and the
      running standard deviation of its input, per layer or per channel:
      `mu <- m mu + (1 - m) mean(x)`, `sigma <- m sigma + (1 - m) std(x)`
      (weights `moving_mean`, init 0, and `moving_std`, init 1). Under
      `tf.distribute` the batch statistics are those of the global batch.
      One batch cannot spoil them (below).
    * Phase II (learning), entered by `realign()`: `BL = mu - 3 sigma`,
      `BR = mu + 3 sigma`, `KL = 0`, `KR = 1`, `Y^i = relu(B_i)`, then every
      parameter is learned and the statistics are no longer updated.

    The phase is the non-trainable weight `realigned` (0 or 1), read inside
    `call`, so a compiled train step (TensorFlow graph or XLA, JAX `jit`)
    switches phase without retracing, and the phase saves with the model.
    In `model.fit`, the callback `keras_learnact.callbacks.PWLURealignment`
    calls `realign()` after the warm-up epochs; in a custom training loop,
    call `realign()` yourself between steps.

    Statistics that one batch cannot spoil. The batch statistics are those
    of the batch's finite entries: NaN and infinite entries are left out,
    and the moments are computed scaled by the largest magnitude, so that
    no finite value overflows them (up to the float32 maximum). Before a
    batch's statistics enter the running ones they are bounded by the
    reference scale `r = max(|mu| + sigma, 1e-4)`: the batch mean is
    clipped to `mu +- 4 r` and the batch standard deviation to at most
    `4 r`. So one batch, whatever it holds (one input of 1e20, say), moves
    `mu` by at most `(1 - m) 4 r` and `sigma` by at most `(1 - m) 4 r`
    (0.4 r with the default momentum), and the next batches average it
    out. A channel with no finite entry in the batch (an empty batch, or
    only NaN) keeps its statistics. A channel with a single entry (a batch
    of one after a `Dense` layer) has no spread of its own: its distance
    from `mu` stands for its standard deviation. On clean data the bound
    does not bind, and the statistics are the paper's: a batch mean four
    reference scales from the running mean does not happen by chance.
    Only data far larger than the initial `mu = 0`, `sigma = 1` reaches it
    in the first updates, and the statistics then catch up geometrically
    (`r` grows at least 1.3-fold per update while bounded, with the
    default momentum): for data of scale 1000 they are within 5 % after
    about 50 updates instead of 30, against the thousands of a 5-epoch
    phase I. `realign()` keeps the bounds within a quarter of the dtype's
    range, so the unit stays finite whatever the statistics.

    Inputs of integer or boolean dtype are computed, like `Dense` does, in
    the layer's compute dtype, which is also the output's dtype.

    Because no gradient reaches the parameters in phase I, optimiser moments
    are still zero when phase II starts. Weight decay, however, acts in
    phase I too (harmlessly: realignment resets every parameter) and in
    phase II pulls the heights towards a flat function, not towards ReLU.

    Args:
        num_intervals: `N`, the number of intervals between the bounds, an
            integer >= 2 (default 16; the paper finds 8-16 best).
        granularity: `"channel"` (default) for one unit per channel of
            `axis`, or `"layer"` for one unit for the whole layer.
        axis: the channel axis for channel granularity (default -1).
        momentum: the momentum `m` of the running statistics, in [0, 1)
            (default 0.9).
        bound_sigmas: how many running standard deviations each bound lies
            from the running mean after realignment, > 0 (default 3.0).
        initial_bounds: `(BL, BR)` before realignment (or from the start
            with `start_realigned=True`), finite with `BL < BR`
            (default `(-3.0, 3.0)`, which with an even `N` gives exact ReLU).
        start_realigned: if True, the layer starts in phase II with the
            initial ReLU parameters and learns them from the first step,
            skipping the statistics phase (default False; implied by
            `initial_function`).
        **kwargs: `initial_function` and `initial_range` (see
            `LearnableActivation` and above), and base layer keyword
            arguments, such as `name` and `dtype`.

    Examples:

    >>> import keras, numpy as np, keras_learnact as kla
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(4, 3),
    ...     kla.layers.PWLU(num_intervals=8),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(1),
    ... ])
    >>> pwlu = model.layers[1]
    >>> pwlu.is_realigned()
    False
    >>> tuple(pwlu.curve(np.array([-2.0, 0.0, 1.5]))[0].tolist())
    (0.0, 0.0, 1.5)
    >>> model.compile("adam", "mse")
    >>> x = np.random.default_rng(0).normal(size=(16, 8, 8, 3))
    >>> history = model.fit(
    ...     x, np.zeros((16, 1)), epochs=3, verbose=0,
    ...     callbacks=[kla.callbacks.PWLURealignment(warmup_epochs=2)])
    >>> pwlu.is_realigned()
    True

    Reference:
        Zhou, Zhu, Chen, Guo, Yu, Tang, Lin, Wang, Zhou, "Learning specialized
        activation functions with the Piecewise Linear Unit", ICCV 2021,
        arXiv:2104.03693; journal version "PWLU: Learning Specialized
        Activation Functions with the Piecewise Linear Unit", IEEE TPAMI 2023.
    """

    def __init__(self, num_intervals=16, granularity="channel", axis=-1,
                 momentum=0.9, bound_sigmas=3.0, initial_bounds=(-3.0, 3.0),
                 start_realigned=False, **kwargs):
        super().__init__(granularity=granularity, axis=axis, **kwargs)
        if (not isinstance(num_intervals, (int, np.integer))
                or isinstance(num_intervals, bool) or num_intervals < 2):
            raise ValueError(
                f"Invalid num_intervals={num_intervals!r}: expected an "
                "integer >= 2."
            )
        self.num_intervals = int(num_intervals)
        self.momentum = check_number(
            "momentum", momentum, 0.0, 1.0, high_open=True
        )
        self.bound_sigmas = check_number(
            "bound_sigmas", bound_sigmas, 0.0, low_open=True
        )
        try:
            left, right = initial_bounds
        except (TypeError, ValueError):
            raise ValueError(
                f"Invalid initial_bounds={initial_bounds!r}: expected a pair "
                "(BL, BR) of finite numbers with BL < BR."
            ) from None
        left = check_number("initial_bounds[0]", left)
        right = check_number("initial_bounds[1]", right)
        if not left < right:
            raise ValueError(
                f"Invalid initial_bounds={initial_bounds!r}: expected "
                f"BL < BR, got BL={left} >= BR={right}; allowed: any finite "
                "pair with BL < BR."
            )
        self.initial_bounds = (left, right)
        self.start_realigned = bool(start_realigned)

    def build(self, input_shape):
        super().build(input_shape)
        n = self.num_intervals
        if self.channels * (n + 2) >= TABLE_LIMIT:
            raise ValueError(
                f"PWLU with num_intervals={n} on {self.channels} channels "
                f"needs {self.channels * (n + 2)} table entries; allowed: "
                f"fewer than 2^23 = {TABLE_LIMIT} (channels * "
                "(num_intervals + 2))."
            )
        left, right = self.initial_bounds
        grid = left + (right - left) * np.arange(n + 1) / n

        def constant(value):
            def init(shape, dtype=None):
                array = np.broadcast_to(np.asarray(value, "float32"), shape)
                return ops.convert_to_tensor(array.copy(), dtype=dtype)
            return init

        def weight(name, value, shape=(), trainable=True):
            return self.add_weight(
                name=name, shape=self.param_shape(*shape),
                initializer=constant(value), trainable=trainable,
                autocast=False,
            )

        self.left_bound = weight("left_bound", left)
        self.right_bound = weight("right_bound", right)
        self.heights = weight("heights", np.maximum(grid, 0.0), (n + 1,))
        self.left_slope = weight("left_slope", 0.0)
        self.right_slope = weight("right_slope", 1.0)
        self.moving_mean = weight("moving_mean", 0.0, trainable=False)
        self.moving_std = weight("moving_std", 1.0, trainable=False)
        self.realigned = self.add_weight(
            name="realigned", shape=(),
            initializer=constant(1.0 if self.start_realigned else 0.0),
            trainable=False, autocast=False,
        )
        # Phase I evaluates ReLU through the same lookup (see `_tables`).
        relu_slopes = np.ones(n + 2, "float32")
        relu_slopes[0] = 0.0
        self._relu_slopes = relu_slopes

    # -- the function --------------------------------------------------------

    def _weights(self, dtype):
        """The weights that define the function, as tensors of `dtype`."""
        return [
            ops.cast(w.value, dtype) for w in (
                self.left_bound, self.right_bound, self.heights,
                self.left_slope, self.right_slope, self.realigned,
            )
        ]

    def _tables(self, left, right, heights, kl, kr, realigned):
        """The lookup of the function: start, `1 / d`, slopes, offsets.

        The segment index is `floor(clip((x - start) / d, 0, N + 1))`, where
        `start = BL - d`, so index 0 is the left tail, `1..N` the intervals
        and `N + 1` the right tail; the function is
        `x * slopes[index] + offsets[index]`. In phase I these describe
        exact ReLU: `start = 0`, a huge `1 / d` and slope 0 only at index 0.
        Shapes: `param_shape()` for the first two, `param_shape(N + 2)` for
        the tables.

        The phase is chosen with `ops.cond`, not `ops.where`: XLA (JAX, and
        TensorFlow with `jit_compile=True`) keeps a conditional's outputs as
        buffers, where it would otherwise fuse the tables' arithmetic into
        the per-element lookup loop and redo it for every element (measured
        on a 2-core CPU, JAX, 128x32x32x32, a minimal table-plus-lookup
        function: 16.6 ms -> 7.9 ms; the model benchmark's PWLU-16 with
        TensorFlow `jit_compile=True`: predict 1.35x -> 1.19x ReLU).

        Both phases' tables are computed before the conditional (they are
        a few numbers per channel), so that its branches only pass tensors
        through and differentiating it computes nothing inside a branch.
        With the arithmetic inside the learned branch, TensorFlow summed
        gradients in that branch with an `AddN`, which its graph optimiser
        may rewrite into an accumulation through a temporary variable; the
        branch is not taken in phase I, the variable was never released,
        and the next step failed with `AlreadyExistsError` (ResNet-18 at
        batch 128 on a CPU, from the second step).
        """
        n = self.num_intervals
        dtype = keras.backend.standardize_dtype(left.dtype)

        def learned():
            kl_, kr_ = kl[..., None], kr[..., None]
            # max(BR - BL, MIN_WIDTH), written so that no backend promotes
            # a float64 layer's tensors to float32.
            width = ops.relu(right - left - MIN_WIDTH) + MIN_WIDTH
            step = width / n
            rise = heights[..., 1:] - heights[..., :-1]
            inner_slopes = rise / step[..., None]
            knots = left[..., None] + step[..., None] * ops.arange(
                n, dtype=dtype
            )
            slopes = ops.concatenate([kl_, inner_slopes, kr_], axis=-1)
            offsets = ops.concatenate([
                heights[..., :1] - left[..., None] * kl_,
                heights[..., :-1] - knots * inner_slopes,
                heights[..., -1:] - (left + width)[..., None] * kr_,
            ], axis=-1)
            return left - step, 1.0 / step, slopes, offsets

        def relu():
            # Typed constants: a Python float here would drop float64 to
            # float32 on some backends.
            zeros = ops.zeros_like(left)
            slopes = zeros[..., None] + ops.cast(self._relu_slopes, dtype)
            return (zeros, ops.full_like(left, RELU_INVERSE_STEP), slopes,
                    ops.zeros_like(slopes))

        learned_tables, relu_tables = learned(), relu()
        return cond(realigned > 0.5, lambda: learned_tables,
                    lambda: relu_tables)

    def call(self, inputs, training=None):
        inputs = ops.convert_to_tensor(inputs)
        if not keras.backend.is_float_dtype(inputs.dtype):
            # As `Dense` does: integer and boolean inputs (which Keras does
            # not autocast) give outputs in the compute dtype.
            inputs = ops.cast(inputs, self.compute_dtype)
        dtype = self.variable_dtype
        x = ops.cast(inputs, dtype)
        if training:
            self._update_statistics(x)
        # The tables stay outside the fused kernel: inside it, XLA fuses
        # their arithmetic into the per-element loop (measured: predict
        # 1.2-1.4x -> 2x ReLU).
        tables = self._tables(*self._weights(dtype))
        outputs = self._lookup_kernel(len(x.shape))(x, *tables)
        return ops.cast(outputs, inputs.dtype)

    def _lookup_kernel(self, ndim):
        """The fused lookup `fn(x, start, inverse_step, slopes, offsets)`
        for inputs of rank `ndim`, shared by every layer with this layout
        and number of intervals."""
        return _lookup_kernel(self.layout(ndim), self.num_intervals)

    # -- phase I statistics --------------------------------------------------

    def _batch_statistics(self, x, shift):
        """Count, mean and standard deviation of the finite entries of `x`.

        Per granularity, each of shape `param_shape()`. NaN and infinite
        entries are left out; a channel without a finite entry has count
        0 (and NaN statistics). The moments are taken of
        `(x - shift) / scale`, `scale` the largest magnitude among the
        finite entries and `shift` (at least the replicas' mean of their
        largest magnitudes under a distribution strategy; at most 2^126
        in float32), so that no finite input overflows them, and from
        `shift`, the running mean, so that they lose little to
        cancellation.

        Under a TensorFlow distribution strategy with several replicas, the
        sums are all-reduced so that the statistics are the global batch's.

        Args:
            x: the input, in the layer's variable dtype.
            shift: the running mean, shape `param_shape()`.
        """
        ndim = len(x.shape)
        axes = self.reduction_axes(ndim)
        context = _multi_replica_context()
        finite = ops.isfinite(x)
        zero = ops.zeros((), x.dtype)
        magnitude = ops.max(ops.where(finite, ops.abs(x), zero), axis=axes,
                            keepdims=True, initial=0.0)
        if context is not None:
            import tensorflow as tf

            # One scale on every replica: the mean of their maxima (there
            # is no maximum all-reduce), summed pre-divided so that it
            # cannot overflow.
            magnitude = context.all_reduce(
                tf.distribute.ReduceOp.SUM,
                magnitude / context.num_replicas_in_sync)
        shift = self.broadcast(shift, ndim)
        # Within [tiny, 2^(maxexp - 2)], so that `1 / scale` is a normal
        # number: XLA (seen on JAX) divides by a broadcast scale as a
        # multiplication by its reciprocal, and flushes a subnormal one to
        # 0 (for an input of 3e38 every `q` was 0).
        info = np.finfo(keras.backend.standardize_dtype(x.dtype))
        scale = ops.clip(ops.maximum(magnitude, ops.abs(shift)),
                         float(info.tiny), 2.0 ** (info.maxexp - 2))
        q = ops.where(finite, x / scale - shift / scale, zero)
        sums = [ops.sum(ops.cast(finite, x.dtype), axis=axes, keepdims=True),
                ops.sum(q, axis=axes, keepdims=True),
                ops.sum(ops.square(q), axis=axes, keepdims=True)]
        if context is not None:
            sums = context.all_reduce(tf.distribute.ReduceOp.SUM, sums)
        count, total, squares = [
            ops.reshape(v, self.param_shape()) for v in sums
        ]
        scale = ops.reshape(scale, self.param_shape())
        shift = ops.reshape(shift, self.param_shape())
        mean_q = total / count
        variance_q = ops.relu(squares / count - ops.square(mean_q))
        # `(shift / scale + mean_q) * scale`, not `shift + mean_q * scale`,
        # which can overflow where the mean itself does not.
        mean = (shift / scale + mean_q) * scale
        return count, mean, ops.sqrt(variance_q) * scale

    def _update_statistics(self, x):
        """Moves the running statistics towards this batch's, boundedly.

        See "Statistics that one batch cannot spoil" in the class
        docstring for the rules.
        """
        m = self.momentum
        old_mean = self.moving_mean.value
        old_std = self.moving_std.value

        def collect():
            count, mean, std = self._batch_statistics(x, old_mean)
            # A single entry has no spread of its own: its distance from
            # the running mean stands for it.
            std = ops.where(count == 1, ops.abs(mean - old_mean), std)
            reach = OUTLIER_BOUND * ops.maximum(
                ops.abs(old_mean) + old_std,
                ops.full_like(old_std, MIN_WIDTH))
            mean = ops.minimum(ops.maximum(mean, old_mean - reach),
                               old_mean + reach)
            std = ops.minimum(std, reach)
            new_mean = m * old_mean + (1.0 - m) * mean
            new_std = m * old_std + (1.0 - m) * std
            keep = ops.logical_and(count > 0, ops.logical_and(
                ops.isfinite(new_mean), ops.isfinite(new_std)))
            return (ops.where(keep, new_mean, old_mean),
                    ops.where(keep, new_std, old_std))

        on = self.realigned.value > 0.5
        if _multi_replica_context() is not None:
            # Collective all-reduce must not sit inside a conditional branch.
            mean, std = collect()
            mean = ops.where(on, old_mean, mean)
            std = ops.where(on, old_std, std)
        else:
            mean, std = cond(on, lambda: (old_mean, old_std), collect)
        self.moving_mean.assign(mean)
        self.moving_std.assign(std)

    # -- phase II ------------------------------------------------------------

    def is_realigned(self):
        """Whether the layer is in phase II (learning its parameters).

        Returns:
            A Python bool, read from the `realigned` weight.

        Examples:

        >>> import keras_learnact as kla
        >>> layer = kla.layers.PWLU(start_realigned=True)
        >>> layer.build((None, 4))
        >>> layer.is_realigned()
        True
        """
        self._check_built("is_realigned")
        return bool(ops.convert_to_numpy(self.realigned.value) > 0.5)

    def realign(self):
        """Enters phase II: resets the unit from the running statistics.

        Sets `BL = mu - s sigma`, `BR = mu + s sigma` (`s = bound_sigmas`,
        `BR` at least `BL + MIN_WIDTH`), `KL = 0`, `KR = 1`, the heights to
        ReLU on the new grid (or, for a layer with `initial_function`, the
        heights and slopes to that function's, as `fit_to` sets them), and
        the `realigned` weight to 1. From then on
        every parameter is learned and the statistics are frozen. Calling it
        again resets the unit again from the (frozen) statistics.

        Call it between steps, not inside a compiled function; a compiled
        train step picks the new values up without retracing.

        Examples:

        >>> import numpy as np, keras_learnact as kla
        >>> layer = kla.layers.PWLU(num_intervals=4, granularity="layer")
        >>> layer.build((None, 3))
        >>> _ = layer.moving_mean.assign(1.0)
        >>> _ = layer.moving_std.assign(0.5)
        >>> layer.realign()
        >>> layer.parameter_values()["right_bound"].tolist()
        2.5
        """
        self._check_built("realign")
        n = self.num_intervals
        mean = ops.convert_to_tensor(self.moving_mean.value)
        std = ops.relu(self.moving_std.value)
        # Bounds within a quarter of the dtype's range, so that the range
        # and every table entry stay finite even for statistics near it.
        limit = float(np.finfo(self.moving_mean.dtype).max) / 4.0
        left = ops.clip(mean - self.bound_sigmas * std, -limit, limit)
        width = ops.minimum(
            ops.relu(2.0 * self.bound_sigmas * std - MIN_WIDTH) + MIN_WIDTH,
            limit)
        fractions = ops.arange(n + 1, dtype="float32") / n
        grid = left[..., None] + width[..., None] * fractions
        self.left_bound.assign(left)
        self.right_bound.assign(left + width)
        if self.initial_function is None:
            self.heights.assign(ops.relu(grid))
            self.left_slope.assign(ops.zeros_like(left))
            self.right_slope.assign(ops.ones_like(left))
        else:
            self._set_function(
                _initial.function(self.initial_function),
                ops.convert_to_numpy(self.left_bound.value),
                ops.convert_to_numpy(self.right_bound.value))
        self.realigned.assign(1.0)

    def _check_built(self, method):
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' is not built yet: call it on an input "
                f"(or call build(input_shape)) before {method}()."
            )

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_intervals": self.num_intervals,
            "momentum": self.momentum,
            "bound_sigmas": self.bound_sigmas,
            "initial_bounds": list(self.initial_bounds),
            "start_realigned": self.start_realigned,
        })
        return config

    def _fit_parameters(self, function, x, weights):
        """Bounds `[min(x), max(x)]`, the heights and tail slopes from
        `function`, and phase II (see `LearnableActivation.fit_to` and
        "Starting as another function" in the class docstring). Not a
        least-squares fit: `weights` are not used."""
        left, right = float(np.min(x)), float(np.max(x))
        self._assign(self.left_bound, left)
        self._assign(self.right_bound, right)
        self._set_function(function, left, right)
        self._assign(self.realigned, 1.0)

    def _set_function(self, function, left, right):
        """Heights `function(B_i)` on the grid of the bounds `left`,
        `right` (numbers, or NumPy arrays of `param_shape()`), and the
        tail slopes of `function` just outside them."""
        left = np.asarray(left, "float64")
        right = np.asarray(right, "float64")
        fractions = np.arange(self.num_intervals + 1) / self.num_intervals
        grid = left[..., None] + (right - left)[..., None] * fractions
        heights = _initial.evaluate(function, grid.ravel())
        left_slope, right_slope = _initial.outward_slopes(
            function, left, right)
        self._assign(self.heights, heights.reshape(grid.shape))
        self._assign(self.left_slope, left_slope)
        self._assign(self.right_slope, right_slope)


def _multi_replica_context():
    """The TensorFlow replica context when it has several replicas, else
    None (always None on the other backends)."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if (not tf.distribute.has_strategy()
            or tf.distribute.in_cross_replica_context()):
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context
