"""Fusing an elementwise activation into one kernel on TensorFlow.

Without XLA (Keras's default for TensorFlow on a CPU), every `keras.ops` call
in an activation is a separate kernel and a full pass over memory, so a
five-function ABU or a table-lookup PWLU costs many times a ReLU. `fuse`
keeps the mathematics in `keras.ops` and changes only how TensorFlow runs it:

- forward: `fn(x, *params)` compiled by XLA into one fused kernel, which
  reads `x` and writes `y` and keeps no intermediate for the backward pass;
- backward: the input gradient recomputed from `x` by a second fused XLA
  kernel, and the parameter gradients from TensorFlow's ordinary autodiff
  of `fn`, where graph pruning keeps only what they need (best where they
  need transcendental functions that XLA's CPU code evaluates slowly, as
  in ABU); or a hand-written `gradient` (PWLU: XLA's derivative of a
  gather keeps temporaries too large to reuse).

On JAX the train step is already compiled by XLA, which fuses the same way,
and on PyTorch `fn` runs as written: for both `fuse` returns `fn` unchanged.
The result is numerically the same function with the same gradients.
"""

import functools

import keras


def fuse(fn, gradient=None):
    """Returns `fn` fused as described in the module docstring.

    Args:
        fn: a function `fn(x, *params) -> y` written with `keras.ops`,
            elementwise in `x` (`y` has the shape of `x`), whose `params`
            are tensors (read variables, not variables).
        gradient: an optional hand-written backward pass,
            `gradient(upstream, x, *params) -> (dx, *dparams)`, used on
            TensorFlow instead of the XLA input gradient and autodiff; it
            runs as written, so it compiles its own kernels (`xla_kernel`).

    Returns:
        A function with the signature and gradients of `fn`.

    Examples:

    >>> from keras import ops
    >>> scaled_tanh = fuse(lambda x, a: a * ops.tanh(x))
    >>> float(ops.convert_to_numpy(scaled_tanh(ops.ones((2,)), 2.0))[0])
    1.523...
    """
    if keras.backend.backend() != "tensorflow":
        return fn
    by_rank = {}

    def call(x, *params):
        # One fused function per input rank: shapes are relaxed to unknown
        # sizes between calls, and a rank must stay known for `fn`.
        rank = len(x.shape)
        if rank not in by_rank:
            by_rank[rank] = _fuse_tensorflow(fn, gradient)
        return by_rank[rank](x, *params)

    return call


def xla_kernel(fn):
    """`fn` compiled by XLA into one fused kernel (TensorFlow only).

    Args:
        fn: a function of tensors written with `keras.ops` or `tf`.

    Returns:
        A `tf.function` with `jit_compile=True`; tensor shapes are relaxed
        between calls, Python arguments are part of its signature.

    Examples:

    >>> import keras
    >>> if keras.backend.backend() == "tensorflow":
    ...     square = xla_kernel(lambda x: x * x)
    ...     print(float(square(keras.ops.convert_to_tensor(3.0))))
    ... else:
    ...     print(9.0)
    9.0
    """
    import tensorflow as tf

    # TensorFlow counts eager tracing per code object, so the kernels of
    # several layers of one class (one method, one code object), each
    # traced once, would add up to a false "triggered tf.function
    # retracing" warning. A partial has no code object of its own, so each
    # kernel is counted alone and real retracing still warns.
    return tf.function(
        functools.partial(fn), jit_compile=True, reduce_retracing=True
    )


def _fuse_tensorflow(fn, custom_gradient):
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
            if custom_gradient is not None:
                return tuple(custom_gradient(upstream, x, *params))
            dx = input_gradient(upstream, x, *params)
            if not params:
                return dx
            return (dx, *vjp(upstream, list(params), lambda: fn(x, *params)))

        return forward(x, *params), gradient

    def call(x, *params):
        params = [tf.cast(p, x.dtype) for p in params]
        return fused(x, *params)

    return call
