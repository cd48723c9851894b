"""How each backend runs an elementwise activation and its backward pass.

A family writes its function `fn(x, *params)` once in `keras.ops`, and
where autodiff would keep large intermediates, its backward pass
`gradient(upstream, x, *params)` too, recomputing from `x`. `fuse` decides
how each backend runs the pair:

- TensorFlow (without XLA, Keras's default on a CPU, every `keras.ops`
  call is a separate kernel and a full pass over memory): `fn` compiled by
  XLA into one fused kernel, which reads `x`, writes `y` and keeps nothing
  else; the backward pass is `gradient` as written (it compiles its own
  kernels with `xla_kernel`; ABU's, one kernel, brought the model
  benchmark's peak training memory from 3.8x ReLU's to 1.7x), or without
  one the input gradient
  recomputed from `x` by a second XLA kernel and the parameter gradients
  from TensorFlow's ordinary autodiff of `fn`, where graph pruning keeps
  only what they need.
- PyTorch, for the families that ask (`torch_compile=True`: ABU,
  AdaptiveScaling; Rational through `trained`; PWLU's lookup and SLAF's
  batch-normalised form through `compiled` itself): `fn` compiled by
  `torch.compile` (`compiled`), whose compiled autodiff makes the
  backward pass one kernel that recomputes from `x`. On the benchmark CNN
  (2-core CPU) this took ABU's train step from 2.0x ReLU's to 1.16x and
  AdaptiveScaling's (swish) from 1.29x to 1.02x. Where it cannot compile,
  eager autograd.
- JAX (`recompute=True`): `fn` itself forward; backward, JAX's autodiff
  of `fn` recomputed from `x` once the upstream gradient exists
  (`recomputed`), so that the train step keeps `x`, not the intermediates
  of `fn` (ABU's basis values). Plain autodiff kept them: in the benchmark
  CNN (2-core CPU, XLA compiled), peak training memory 2.52x ReLU's for
  ABU, 1.04x recomputed (train step 1.33x -> 1.13-1.20x); PWLU 1.35x ->
  1.06x. A hand-written backward pass kept more there (ABU 1.48x): its
  basis values and slopes feed both the input gradient and the sums.
  AdaptiveScaling keeps plain autodiff (`recompute=False`): recomputing
  its sigmoid took its train step from 1.04-1.09x to 1.14-1.20x.
- The other PyTorch cases: `fn` itself, differentiated by autograd.
  Eager PyTorch runs every operation as a pass over memory and has one
  fused backward kernel per function in autograd, so ABU's hand-written
  backward pass took 95 ms against autograd's 48 ms (128x32x32x16, one
  thread), though it kept 5x less (24 against 120 MB).

The result is numerically the same function with the same gradients.
"""

import functools
import os
import warnings

import keras
from keras import ops

# Whether each `keras.ops` call runs as its own kernel outside a compiled
# step (TensorFlow without XLA, Keras's default on a CPU), so that what
# an XLA kernel of `xla_kernel` does in one pass matters; on JAX the whole
# step is one XLA program, which fuses as it sees fit.
SEPARATE_KERNELS = keras.backend.backend() == "tensorflow"
# How many versions of one function PyTorch's compiler may make in calls
# through `compiled` (see `_recompilations`).
RECOMPILE_LIMIT = 64
# Set to "0" to run `compiled`'s functions eagerly on PyTorch.
TORCH_COMPILE_VARIABLE = "KERAS_LEARNACT_TORCH_COMPILE"


def fuse(fn, gradient=None, torch_compile=False, chunks=False,
         recompute=True):
    """Returns `fn` fused as described in the module docstring.

    Args:
        fn: a function `fn(x, *params) -> y` written with `keras.ops`,
            elementwise in `x` (`y` has the shape of `x`), whose `params`
            are tensors (read variables, not variables).
        gradient: an optional hand-written backward pass,
            `gradient(upstream, x, *params) -> (dx, *dparams)` written with
            `keras.ops`, one gradient shaped like each argument, used on
            TensorFlow instead of autodiff (see the module docstring).
        torch_compile: whether PyTorch runs `compiled(fn)` (with its
            compiled autodiff) instead of `fn`: for functions of tensors
            alone, cached per configuration, not a layer's methods (the
            compiler guards on the layer and compiles again for each).
        chunks: whether TensorFlow runs `gradient` on chunks of the batch
            in turn (`in_chunks`), which keeps only a chunk's temporaries
            alive: ABU's backward kernel writes ten full-size tensors
            (with one weight set per layer, peak training memory 1.85x
            ReLU's whole, 1.39x in chunks, the same speed); PWLU's, and
            ABU's with per-channel weights, took longer in chunks.
        recompute: whether JAX's backward pass recomputes `fn` from `x`
            (`recomputed`) rather than keep what autodiff saves.

    Returns:
        A function with the signature and gradients of `fn`.

    Examples:

    >>> from keras import ops
    >>> scaled_tanh = fuse(lambda x, a: a * ops.tanh(x))
    >>> float(ops.convert_to_numpy(scaled_tanh(ops.ones((2,)), 2.0))[0])
    1.523...
    """
    backend = keras.backend.backend()
    if backend == "torch" and torch_compile:
        return compiled(fn)
    if backend == "jax" and recompute:
        return recomputed(fn)
    if backend != "tensorflow":
        return fn
    by_rank = {}

    def call(x, *params):
        # One fused function per input rank: shapes are relaxed to unknown
        # sizes between calls, and a rank must stay known for `fn`.
        rank = len(x.shape)
        if rank not in by_rank:
            by_rank[rank] = _fuse_tensorflow(fn, gradient, chunks)
        return by_rank[rank](x, *params)

    return call


def with_gradient(fn, gradient, output_shape=None):
    """`fn` with a hand-written backward pass on every backend.

    The backward pass recomputes what it needs from the inputs and the
    output, so training keeps only those (the next layer usually keeps the
    output anyway), not the intermediates of `fn`. On JAX and
    PyTorch the two are joined with `keras.ops.custom_gradient`; on JAX
    each is `compiled` (`jax.jit`: compiled with the train step inside one,
    and one program per call outside one; a ResNet-32 with DEU, whose 31
    layers then trace each function once per shape, reached its first
    training step in 38-40 s instead of 46-48 s). On TensorFlow each runs
    as one function shared by every caller (`shared`), traced once per input
    signature (shapes relaxed: one trace serves inputs of any size) and
    kept out of line:
    TensorFlow optimises each body once, however many layers call it, and
    no arithmetic of theirs, conditionals included, is merged into the
    caller's graph (see tests/test_control_flow.py). They run as
    TensorFlow's own kernels, not as XLA kernels: for DEU's closed forms
    (17 per-channel sums in the backward pass) XLA took about 4 s to
    compile the backward pass for each input shape and ran it 3x slower
    (measured on a 2-core CPU, 128x32x32x16: forward and backward 64 ms
    with TensorFlow's kernels, 198 ms with XLA).

    Args:
        fn: a function `fn(x, *params) -> y` written with `keras.ops`,
            whose arguments are all tensors.
        gradient: its backward pass, `gradient(upstream, y, x, *params)
            -> (dx, *dparams)` where `y = fn(x, *params)`, written with
            `keras.ops`, one gradient shaped like each argument.
        output_shape: the static shape of `y` as a function of that of
            `x` (default: the same shape, as for an activation).

    Returns:
        A function with the values of `fn` and the gradients of `gradient`.

    Examples:

    >>> from keras import ops
    >>> def cube(x, a):
    ...     return a * x * x * x
    >>> def cube_gradient(upstream, y, x, a):
    ...     return upstream * 3.0 * y / x, ops.sum(upstream * y) / a
    >>> f = with_gradient(cube, cube_gradient)
    >>> float(ops.convert_to_numpy(f(ops.ones((2,)), 2.0))[0])
    2.0
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        forward = shared(fn)
        backward = shared(gradient)

        @tf.custom_gradient
        def joined_tensorflow(x, *params):
            y = forward(x, *params)
            if output_shape is None:
                y = _keep_shape(y, x)
            elif not tf.executing_eagerly():
                y.set_shape(output_shape(x.shape))

            def joined_gradient(upstream):
                grads = backward(upstream, y, x, *params)
                for grad, arg in zip(grads, (x, *params), strict=True):
                    _keep_shape(grad, arg)
                return tuple(grads)

            return y, joined_gradient

        return joined_tensorflow

    if keras.backend.backend() == "jax":
        # Each half one compiled program for eager calls (see `compiled`).
        fn, gradient = compiled(fn), compiled(gradient)
    return _joined(fn, gradient)


def recomputed(fn):
    """`fn` whose backward pass, on JAX, recomputes `fn` from `x` and
    differentiates that (`jax.vjp`), once the upstream gradient exists
    (`after`), so that training keeps `x` and not what autodiff of `fn`
    saves; on the other backends `fn` itself.

    Args:
        fn: a function `fn(x, *params) -> y` written with `keras.ops`;
            `y` a tensor or a tuple of them.

    Returns:
        A function with the values and gradients of `fn`.

    Examples:

    >>> from keras import ops
    >>> f = recomputed(lambda x, a: a * ops.tanh(x))
    >>> round(float(ops.convert_to_numpy(f(ops.ones((2,)), 2.0))[0]), 4)
    1.5232
    """
    if keras.backend.backend() != "jax":
        return fn
    import jax

    def gradient(upstream, y, x, *params):
        del y  # recomputed
        return jax.vjp(fn, x, *params)[1](upstream)

    return _joined(fn, gradient)


def after(x, upstream):
    """`x`, as a value that exists only once `upstream` does (JAX).

    XLA's CPU scheduler (jaxlib 0.10) may compute what a backward pass
    recomputes from `x` as soon as `x` exists, in the forward pass, and
    keep it until the backward pass: an optimisation barrier does not stop
    it (XLA's CPU pipeline drops barriers). DEU's recomputed exponentials
    and masks were kept so: the benchmark CNN's peak training memory 2.29x
    ReLU's, 1.24x with the backward pass computed from `after(x, upstream)`
    (Rational 1.49x -> 1.19x). `x - (u > inf)`, `u` one element of
    `upstream`, is `x` exactly (the comparison is false for every `u`, NaN
    included; `-0.0` stays `-0.0`) and depends on `upstream`.

    Args:
        x: a tensor.
        upstream: a tensor that becomes available later.

    Returns:
        `x`, unchanged, on JAX computed after `upstream`; on the other
        backends `x` itself.

    Examples:

    >>> from keras import ops
    >>> x = ops.convert_to_tensor([-0.0, 1.5])
    >>> ops.convert_to_numpy(after(x, ops.ones((2,)))).tolist()
    [-0.0, 1.5]
    """
    if keras.backend.backend() != "jax" or 0 in upstream.shape:
        return x
    late = ops.reshape(upstream, (-1,))[0] > float("inf")
    return x - ops.cast(late, x.dtype)


def _joined(fn, gradient):
    """`fn` with the backward pass `gradient(upstream, y, x, *params)`,
    joined by `keras.ops.custom_gradient` (JAX and PyTorch); on JAX the
    backward pass reads `x` through `after`."""

    @keras.ops.custom_gradient
    def joined(x, *params):
        y = fn(x, *params)

        def backward(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            first = upstream[0] if isinstance(upstream, (tuple, list)) \
                else upstream
            return tuple(gradient(upstream, y, after(x, first), *params))

        return y, backward

    return joined


def trained(fn, gradient):
    """`(training, inference)` functions for an elementwise `fn` whose
    backward pass `gradient` is written by hand.

    On TensorFlow the forward pass is `fuse`d and joined to `gradient`
    (`with_gradient`); on JAX `fn` is joined to `gradient` and compiled
    with the step; on PyTorch both are `compiled(fn)`, whose compiled
    autodiff fuses and recomputes as `gradient` would, in one kernel
    (where no compiler works, eager autograd: eager PyTorch runs each
    operation of `gradient` as its own pass over memory, measured 2.7x
    slower than autograd for Rational, 197 against 73 ms for forward and
    backward of 128x32x32x32 on a 2-core CPU; compiled 11 ms).

    Args:
        fn: a function `fn(x, *params) -> y` written with `keras.ops`,
            elementwise in `x`, whose arguments are all tensors.
        gradient: its backward pass, as for `with_gradient`.

    Returns:
        The functions for training and for inference, with the values of
        `fn` and the gradients of `gradient`.

    Examples:

    >>> from keras import ops
    >>> def cube(x, a):
    ...     return a * x * x * x
    >>> def cube_gradient(upstream, y, x, a):
    ...     return upstream * 3.0 * a * x * x, ops.sum(upstream * x * x * x)
    >>> train, infer = trained(cube, cube_gradient)
    >>> float(ops.convert_to_numpy(train(ops.ones((2,)), 2.0))[0])
    2.0
    """
    backend = keras.backend.backend()
    if backend == "torch":
        kernel = compiled(fn)
        return kernel, kernel
    forward = fuse(fn)
    return with_gradient(forward, gradient), forward


# The elements of one chunk of `in_chunks` (2^18 float32 values, 1 MiB),
# so that the temporaries of a chunk's passes stay in a CPU's cache.
CHUNK_ELEMENTS = 2 ** 18


def in_chunks(fn, tensors, zero, elements=CHUNK_ELEMENTS):
    """`fn(*tensors)` computed on chunks of their first axis in turn, on
    TensorFlow without XLA.

    `fn` returns a pair: a tensor whose first axis matches the inputs'
    (concatenated from the chunks) and one summed over that axis (added up
    over the chunks). TensorFlow without XLA runs each operation as a pass
    over its whole input; a chain of passes over chunks of about
    `elements` values reads and writes the chunk's temporaries in the
    CPU's cache rather than in memory, and keeps only one chunk's
    temporaries alive (DEU's backward pass on 128x1024x32: 88-96 ms whole,
    56-58 ms in chunks of 8 examples, its sums closer to float64's). On
    JAX, PyTorch and under XLA, `fn(*tensors)` as is.

    Args:
        fn: `fn(*chunks) -> (rows, summed)`, written with `keras.ops`;
            `summed` a tensor or a tuple of them.
        tensors: tensors with the same first axis.
        zero: zeros shaped like `summed` (a tensor or a tuple).
        elements: about how many values of the first tensor one chunk
            holds (at least one row).

    Returns:
        `(rows, summed)` of the whole tensors.

    Examples:

    >>> from keras import ops
    >>> x = ops.reshape(ops.arange(12.0), (4, 3))
    >>> rows, total = in_chunks(lambda v: (2.0 * v, ops.sum(v, axis=0)),
    ...                         (x,), ops.zeros((3,)), elements=3)
    >>> ops.convert_to_numpy(total).tolist()
    [18.0, 22.0, 26.0]
    """
    if keras.backend.backend() != "tensorflow":
        return fn(*tensors)
    import tensorflow as tf

    if tf.executing_eagerly() or _in_xla(tf):
        return fn(*tensors)
    first = tensors[0]
    shape = tf.shape(first)
    rows = tf.maximum(1, elements // tf.maximum(1, tf.reduce_prod(shape[1:])))
    count = tf.maximum(1, (shape[0] + rows - 1) // rows)

    def body(i, total, parts):
        begin = i * rows
        whole, summed = fn(*(x[begin:begin + rows] for x in tensors))
        return (i + 1, tf.nest.map_structure(tf.add, total, summed),
                parts.write(i, whole))

    _, total, parts = tf.while_loop(
        lambda i, *_: i < count, body,
        (0, zero, tf.TensorArray(first.dtype, size=count,
                                 infer_shape=False)),
        parallel_iterations=1)
    whole = parts.concat()
    whole.set_shape(first.shape)
    return whole, total


def _in_xla(tf):
    """Whether the graph being built is compiled by XLA as a whole (read
    from TensorFlow's own, private, check; where it is missing, assumed,
    so that `in_chunks` runs whole, as XLA needs)."""
    try:
        from tensorflow.python.ops import control_flow_util

        check = control_flow_util.GraphOrParentsInXlaContext
    except (ImportError, AttributeError):
        return True
    return check(tf.compat.v1.get_default_graph())


def compiled(fn):
    """`fn` compiled by `torch.compile` on PyTorch, as one fused kernel
    for its forward pass and one for its backward pass.

    Shapes are dynamic (one compilation serves most input sizes of a
    rank); a compilation takes seconds, once per process for each rank,
    dtype and gradient mode. Where `torch.compile` fails (no C++
    compiler, an unsupported platform) the first call warns once and `fn`
    runs eagerly from then on; setting the environment variable
    `KERAS_LEARNACT_TORCH_COMPILE=0` runs it eagerly from the start.
    On JAX it is `jax.jit(fn)`: inside a compiled step that changes
    nothing (XLA compiles the step as a whole), but an eager call, such as
    a layer called outside `fit` or `predict`, runs one compiled program
    instead of compiling each operation for its shapes (DEU's per-unit
    coefficients are hundreds of small operations). On TensorFlow `fn` is
    returned unchanged.

    Args:
        fn: a function of tensors written with `keras.ops`, with no
            Python arguments (close over them instead).

    Returns:
        A function with the values and gradients of `fn`.

    Examples:

    >>> from keras import ops
    >>> double = compiled(lambda x: 2.0 * x)
    >>> float(ops.convert_to_numpy(double(ops.ones((3,))))[0])
    2.0
    """
    if keras.backend.backend() == "jax":
        return shared(fn)
    if not compiles():
        return fn
    import torch

    kernel = torch.compile(fn, dynamic=True)
    eager = []

    def call(*args):
        if not eager and not _shapes_only(args):
            try:
                with _recompilations(torch):
                    return kernel(*args)
            except Exception as error:  # noqa: BLE001 (the compiler's)
                eager.append(error)
                warnings.warn(
                    f"torch.compile failed for {fn.__qualname__} "
                    f"({type(error).__name__}: {error}); it runs eagerly "
                    f"from now on (set {TORCH_COMPILE_VARIABLE}=0 to skip "
                    "compiling)", RuntimeWarning, stacklevel=2)
        return fn(*args)

    return call


def compiles():
    """Whether `compiled` compiles here: on PyTorch, unless
    `KERAS_LEARNACT_TORCH_COMPILE=0` (a function that would branch on
    tensor values may then take a branch-free form that compiles whole).

    Returns:
        True or False.

    Examples:

    >>> switched_on = os.environ.get(TORCH_COMPILE_VARIABLE, "1") == "1"
    >>> compiles() == (keras.backend.backend() == "torch" and switched_on)
    True
    """
    return keras.backend.backend() == "torch" and _torch_compile_on()


def _recompilations(torch):
    """A context in which PyTorch's compiler may compile a function again
    up to `RECOMPILE_LIMIT` times (its default is 8).

    The functions each family makes per configuration (`_blend_functions(
    basis, layout)` and the like) share one code object, and PyTorch counts
    recompilations per code object: sharing it lets layers that differ
    only in their channel count share one compiled kernel (sizes are
    symbolic), but six ABU bases, trained and evaluated, are 12 versions
    and used up the 8, after which the function ran eagerly. A copy of the
    code object per configuration avoided that but compiled each channel
    count apart (a 4-stage CNN's first step with PWLU: 19.7 s against 6.5
    s shared)."""
    limit = torch._dynamo.config.recompile_limit
    return torch._dynamo.config.patch(
        recompile_limit=max(limit, RECOMPILE_LIMIT), specialize_float=True)


def _torch_compile_on():
    """Whether `KERAS_LEARNACT_TORCH_COMPILE` (unset: on) asks PyTorch to
    compile; any value but "1" or "0" is refused, naming it."""
    value = os.environ.get(TORCH_COMPILE_VARIABLE, "1").strip()
    if value not in ("0", "1"):
        raise ValueError(
            f"{TORCH_COMPILE_VARIABLE}={value!r}: use 1 (compile with "
            "torch.compile, the default) or 0 (run eagerly)")
    return value == "1"


def _shapes_only(args):
    """Whether a call only works out shapes (Keras building a model on
    PyTorch calls layers on tensors of the "meta" device, which have no
    values): nothing to compile."""
    return any(getattr(arg, "is_meta", False) for arg in args)


def shared(fn):
    """`fn` traced once per input signature, for every layer that calls it.

    For computations that many layers repeat (DEU's per-unit coefficients):
    on TensorFlow a `tf.function` kept out of line in the caller's graph,
    traced once for each rank and dtype of its arguments with every size
    unknown; on JAX a `jax.jit` function; on PyTorch `fn` itself. Each is
    differentiable. A model of dozens of such layers then traces and
    optimises one function instead of dozens of copies of it (a ResNet-32
    with DEU took 410 s from building to its first training step on
    TensorFlow, ReLU 8 s). `fn` must not depend on its arguments' static
    sizes.

    Args:
        fn: a function of tensors written with `keras.ops`, with no Python
            arguments (close over them instead).

    Returns:
        A function with the values and gradients of `fn`.

    Examples:

    >>> from keras import ops
    >>> square = shared(lambda x: x * x)
    >>> float(ops.convert_to_numpy(square(ops.convert_to_tensor(3.0))))
    9.0
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        by_signature = {}

        def call(*args):
            args = [tf.convert_to_tensor(a) for a in args]
            # Traced apart for callers that XLA compiles: `fn` may build
            # different operations there (see `in_chunks`).
            key = (_in_xla(tf), *((len(a.shape), a.dtype) for a in args))
            if key not in by_signature:
                # Kept as one call in the caller's graph (not inlined), so
                # that TensorFlow optimises its body once, not per layer.
                by_signature[key] = tf.function(
                    functools.partial(fn), autograph=False,
                    input_signature=[tf.TensorSpec([None] * rank, dtype)
                                     for rank, dtype in key[1:]],
                    experimental_attributes={"_noinline": True},
                )
            return by_signature[key](*args)

        return call
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def eager_traced(fn):
    """`fn` traced once for eager calls, written inline in a graph.

    For the small per-unit computations of a layer (DEU's coefficients):
    hundreds of operations on a few numbers each, which a compiled step
    fuses or runs cheaply, but which an eager call (a layer called on its
    own, `curve`, the snapshot callback's probe) runs one operation at a
    time. On TensorFlow an eager call runs `shared(fn)`, while a graph (a
    `tf.function`, an export) gets `fn`'s operations inline, as TensorFlow
    Lite needs (it cannot call the out-of-line functions of `shared`); on
    JAX it is `compiled(fn)`; on PyTorch `fn` itself. TensorFlow's graph
    optimiser may round the traced function differently from operations
    run one at a time: PWLU's tables, whose offsets cancel, moved eager
    outputs by up to 6e-6 from TensorFlow Lite's, so they stay eager.

    Args:
        fn: a function of tensors written with `keras.ops`, with no Python
            arguments (close over them instead), that does not depend on
            its arguments' static sizes.

    Returns:
        A function with the values and gradients of `fn`.

    Examples:

    >>> from keras import ops
    >>> halve = eager_traced(lambda x: 0.5 * x)
    >>> float(ops.convert_to_numpy(halve(ops.convert_to_tensor(3.0))))
    1.5
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return compiled(fn)
    if backend != "tensorflow":
        return fn
    import tensorflow as tf

    traced = shared(fn)

    def call(*args):
        return traced(*args) if tf.executing_eagerly() else fn(*args)

    return call


def _keep_shape(tensor, like):
    """`tensor` with the static shape of `like` (in a graph; the shared
    functions return tensors of unknown size)."""
    if not hasattr(tensor, "set_shape") or not hasattr(like, "shape"):
        return tensor
    import tensorflow as tf

    if not tf.executing_eagerly():
        tensor.set_shape(like.shape)
    return tensor


def xla_kernel(fn, relax_shapes=True):
    """`fn` compiled by XLA into one fused kernel on TensorFlow.

    On JAX (where the train step is compiled as a whole) and PyTorch `fn`
    is returned unchanged, so a backward pass that compiles its kernels
    with it is written once for every backend.

    Args:
        fn: a function of tensors written with `keras.ops` or `tf`.
        relax_shapes: whether tensor shapes are relaxed to unknown sizes
            between calls (one trace for many shapes; default), or each
            new shape is traced with its sizes known.

    Returns:
        On TensorFlow a `tf.function` with `jit_compile=True`, whose
        signature includes its Python arguments; elsewhere `fn`.

    Examples:

    >>> import keras
    >>> square = xla_kernel(lambda x: x * x)
    >>> float(square(keras.ops.convert_to_tensor(3.0)))
    9.0
    """
    if keras.backend.backend() != "tensorflow":
        return fn
    import tensorflow as tf

    # TensorFlow counts eager tracing per code object, so the kernels of
    # several layers of one class (one method, one code object), each
    # traced once, would add up to a false "triggered tf.function
    # retracing" warning. A partial has no code object of its own, so each
    # kernel is counted alone and real retracing still warns.
    return tf.function(
        functools.partial(fn), jit_compile=True,
        reduce_retracing=relax_shapes, autograph=False,
    )


def _fuse_tensorflow(fn, custom_gradient, chunks):
    import tensorflow as tf

    def vjp(upstream, sources, fn_of_sources):
        with tf.GradientTape() as tape:
            tape.watch(sources)
            y = fn_of_sources()
        return tape.gradient(
            y, sources, output_gradients=upstream,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )

    forward = xla_kernel(fn)
    input_gradient = xla_kernel(
        lambda upstream, x, *params: vjp(upstream, [x],
                                         lambda: fn(x, *params))[0]
    )

    @tf.custom_gradient
    def fused(x, *params):
        def gradient(upstream):
            if custom_gradient is not None and not chunks:
                return tuple(custom_gradient(upstream, x, *params))
            if custom_gradient is not None:
                def part(upstream, x):
                    dx, *dparams = custom_gradient(upstream, x, *params)
                    return dx, tuple(dparams)

                dx, dparams = in_chunks(part, (upstream, x), tuple(
                    tf.zeros_like(p) for p in params))
                return (dx, *dparams)
            dx = input_gradient(upstream, x, *params)
            if not params:
                return dx
            return (dx, *vjp(upstream, list(params), lambda: fn(x, *params)))

        return forward(x, *params), gradient

    def call(x, *params):
        params = [tf.cast(p, x.dtype) for p in params]
        return fused(x, *params)

    return call
