"""Backend-agnostic gradients of a layer, and finite-difference checks.

`analytic_gradients` asks the backend's autodiff for the gradient of
`sum(layer(x) * r)` with respect to the input and every trainable weight;
`numeric_gradients` estimates the same by central differences. Build the
layer with `dtype="float64"` so that the differences are accurate.
"""

import keras
import numpy as np
from keras import ops


def loss_weights(shape, seed=0):
    """The fixed random weights `r` of the loss `sum(layer(x) * r)`."""
    return np.random.default_rng(seed).normal(size=shape)


def analytic_gradients(layer, x, training=False):
    """Autodiff gradients of `sum(layer(x) * r)`.

    Args:
        layer: a built layer.
        x: a NumPy input.
        training: passed to the layer.

    Returns:
        A dict: `"inputs"` and each trainable weight's name to a NumPy array.
    """
    x = np.asarray(x)
    r = loss_weights(layer.compute_output_shape(x.shape))
    variables = list(layer.trainable_variables)
    names = ["inputs"] + [v.name for v in variables]
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(layer(xt, training=training) * r)
        grads = tape.gradient(loss, [xt] + [v.value for v in variables])
    elif backend == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss_fn(trainable, xj):
            out, _ = layer.stateless_call(
                trainable, non_trainable, xj, training=training
            )
            return (out * r).sum()

        g_vars, g_x = jax.grad(loss_fn, argnums=(0, 1))(
            [v.value for v in variables], x
        )
        grads = [g_x] + list(g_vars)
    elif backend == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        out = layer(xt, training=training)
        loss = (out * torch.as_tensor(r, dtype=out.dtype)).sum()
        grads = torch.autograd.grad(
            loss, [xt] + [v.value for v in variables], allow_unused=True
        )
    else:
        raise NotImplementedError(backend)
    values = [x] + [v.value for v in variables]
    return {
        name: np.zeros(np.shape(v)) if g is None else np.asarray(
            ops.convert_to_numpy(g), dtype="float64"
        )
        for name, g, v in zip(names, grads, values, strict=True)
    }


def numeric_gradients(layer, x, step=1e-6, training=False):
    """Central-difference gradients of `sum(layer(x) * r)`.

    Args:
        layer: a built layer (float64 for accurate results).
        x: a NumPy input.
        step: the difference step.
        training: passed to the layer. Layers that update state in training
            must be given `training=False` here or have state restored.

    Returns:
        A dict like `analytic_gradients`.
    """
    x = np.asarray(x, dtype="float64")
    r = loss_weights(layer.compute_output_shape(x.shape))

    def loss():
        # A copy: JAX may alias the buffer and compute asynchronously.
        out = ops.convert_to_numpy(layer(x_cur.copy(), training=training))
        return float(np.sum(np.asarray(out, "float64") * r))

    x_cur = x.copy()
    grads = {"inputs": np.zeros_like(x)}
    for i in np.ndindex(x.shape):
        x_cur[i] = x[i] + step
        up = loss()
        x_cur[i] = x[i] - step
        down = loss()
        x_cur[i] = x[i]
        grads["inputs"][i] = (up - down) / (2 * step)
    for v in layer.trainable_variables:
        base = np.asarray(ops.convert_to_numpy(v.value), dtype="float64")
        g = np.zeros_like(base)
        for i in np.ndindex(base.shape):
            moved = base.copy()
            moved[i] += step
            v.assign(moved)
            up = loss()
            moved[i] -= 2 * step
            v.assign(moved)
            down = loss()
            g[i] = (up - down) / (2 * step)
        v.assign(base)
        grads[v.name] = g
    return grads


# Keras's JAX backend computes some float64 ops (tanh among them) in float32
# (`result_type(x, float)` resolves to floatx), so double-precision central
# differences see float32 round-off there: use a wider step and tolerance.
JAX_LOOSENING = {"step": 1e-3, "rtol": 2e-3, "atol": 2e-4}


def assert_gradients_match(layer, x, rtol=1e-5, atol=1e-7, step=1e-6,
                           training=False):
    """Asserts autodiff gradients equal central differences.

    On JAX, `step`, `rtol` and `atol` are raised to at least
    `JAX_LOOSENING` (see there why).

    Args:
        layer: a built float64 layer.
        x: a NumPy input (avoid points where the function has a kink).
        rtol: relative tolerance.
        atol: absolute tolerance.
        step: the difference step.
        training: passed to the layer.
    """
    if keras.backend.backend() == "jax":
        step = max(step, JAX_LOOSENING["step"])
        rtol = max(rtol, JAX_LOOSENING["rtol"])
        atol = max(atol, JAX_LOOSENING["atol"])
    analytic = analytic_gradients(layer, x, training=training)
    numeric = numeric_gradients(layer, x, step=step, training=training)
    assert analytic.keys() == numeric.keys()
    for name in analytic:
        np.testing.assert_allclose(
            analytic[name], numeric[name], rtol=rtol, atol=atol,
            err_msg=f"gradient with respect to {name}",
        )
