"""The input boundary: every check of what a user hands the model, in one place.

The math files trust their arrays. Each public entry point of :class:`numpy_vae.VAE` and of the
multi-sample objectives (:mod:`numpy_vae.bounds`) calls one function here first, which either
returns the inputs in the model's dtype and backend or raises a ValueError that names what was
wrong and how to fix it.

On a GPU every check that looks at values costs a transfer to the host and waits for the
device. The checks therefore gather what they need (the count of non-finite values, the
minimum and the maximum) into one small array and read it once per input. The training loop
checks the whole data set once and then passes ``validate=False``, which keeps only the cast
to the model's dtype (never a silent change of precision).
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from numpy_vae.backend import Backend

Array = Any


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an ``int`` if it is an integer >= ``minimum``, else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | numpy.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_elbo_weights(model: Any, kl_weight: Any) -> float:
    """The ELBO's KL weight (default ``model.beta``) as a float; checks ``model.free_bits``,
    which may change between calls, too."""
    free_bits = model.free_bits
    if isinstance(free_bits, bool) or not (isinstance(free_bits, int | float) and free_bits >= 0):
        raise ValueError(f"free_bits must be a finite number >= 0, got {free_bits!r}")
    return check_kl_weight(model.beta if kl_weight is None else kl_weight, False, "elbo")


def check_number(name: str, value: Any, low: float = 0.0, high: float = math.inf) -> float:
    """``value`` (a number, or a 0-d host array) as a float if it is finite and in [low, high]."""
    try:
        number = math.nan if isinstance(value, bool | str) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and low <= number <= high):
        bound = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return number


def check_kl_weight(kl_weight: Any, multi_sample: bool, objective: str) -> float:
    """The KL weight as a float: finite and >= 0, and 1 for a multi-sample objective (which
    has no separate KL term to weight)."""
    value = check_number("kl_weight", kl_weight)
    if multi_sample and value != 1:
        raise ValueError(
            f"kl_weight {value:g} is a weight of the elbo objective's analytic KL; the "
            f"{objective} objective has no separate KL term (KL warm-up and beta do not apply)"
        )
    return value


def loss_inputs(
    model: Any, x: Array, y: Array | None, eps: Array | None, validate: bool, k: int | None = None
) -> tuple[Array, Array | None, Array]:
    """The inputs of a loss: ``x``, the one-hot labels and ``eps``, each (B, ...).

    ``x`` and ``eps`` come back in the model's dtype, checked if ``validate``. ``eps`` is
    (B, L) for the ELBO (``k`` None) and (B, K, L) for a multi-sample bound, whose K a given
    ``eps`` may change; if omitted it is drawn from ``model.rng``, with K = ``k``.
    """
    if validate:
        x, y = check_batch(model, x, y)
        if eps is not None and k is not None:
            eps = check_sample_noise(model, eps, x.shape[0])
        elif eps is not None:
            eps = as_float_batch("eps", eps, model.latent_dim, "latent_dim", model.backend)[0]
            if eps.shape[0] != x.shape[0]:
                raise ValueError(
                    f"eps has {eps.shape[0]} rows but x has {x.shape[0]}: one noise row per example"
                )
    else:
        x = model.xp.asarray(x, dtype=model.dtype)
        eps = None if eps is None else model.xp.asarray(eps, dtype=model.dtype)
    if eps is None:
        n, latent = x.shape[0], model.latent_dim
        shape = (n, latent) if k is None else (n, k, latent)
        eps = model.rng.standard_normal(shape, dtype=model.dtype)
    return x, model.one_hot(y), eps


def check_batch(model: Any, x: Array, y: Array | None) -> tuple[Array, Array | None]:
    """A batch of inputs ``x`` (B, input_dim) and labels ``y`` (B,), checked and cast.

    ``x`` must be finite floats; in [0, 1] for the Bernoulli likelihood; 0 or 1 for a decoder
    that models binary pixels (it is fed its own 0/1 draws when sampling, so grey levels would
    train its conditionals on inputs it never sees).
    """
    backend = model.backend
    x, lo, hi = as_float_batch("x", x, model.input_dim, "input_dim", backend)
    if model.likelihood.unit_interval and (lo < 0 or hi > 1):
        raise ValueError(
            f"x has values in [{lo:g}, {hi:g}] but the {type(model.likelihood).__name__} "
            "likelihood needs pixel intensities in [0, 1]: scale them (e.g. x / 255) or use "
            "likelihood='gaussian'"
        )
    if model.decoder.binary_pixels:
        n_grey = int(backend.to_host(((x != 0) & (x != 1)).sum()))
        if n_grey:
            raise ValueError(
                f"x has {n_grey} values other than 0 and 1, but the {model.decoder.name.upper()} "
                "decoder models binary pixels: binarize the data (e.g. x > 0.5, or a Bernoulli "
                "draw; train_mnist.py --binarize dynamic)"
            )
    return x, check_labels(model, y, x.shape[0])


def check_codes(model: Any, z: Array, y: Array | None) -> tuple[Array, Array | None]:
    """Latent codes ``z`` (B, latent_dim), finite floats cast to the model's dtype, and their
    labels."""
    z = as_float_batch("z", z, model.latent_dim, "latent_dim", model.backend)[0]
    return z, check_labels(model, y, z.shape[0])


def check_decoder_inputs(
    model: Any, z: Array, y: Array | None, x: Array | None, validate: bool
) -> tuple[Array, Array | None, Array | None]:
    """The decoder's inputs: codes, labels, and the pixels an autoregressive decoder reads
    (required by it, validated or not: without them its logits are undefined)."""
    if model.decoder.reads_pixels and x is None:
        raise ValueError(
            f"the {model.decoder.name.upper()} decoder's logits depend on the pixels: pass x "
            "(its logit d is that of p(x_d | x_<d, z)), or draw images with decode_sample(z)"
        )
    if not validate:
        return z, y, x
    z, y = check_codes(model, z, y)
    if model.decoder.reads_pixels:
        x = check_batch(model, x, y)[0]
        if x.shape[0] != z.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but z has {z.shape[0]}")
    return z, y, x


def check_sample_inputs(model: Any, z: Array, y: Array | None) -> tuple[Array, Array | None]:
    """Codes and labels to draw binary pixels from: the likelihood must be Bernoulli."""
    if not model.likelihood.draws_binary:
        raise ValueError(
            f"decode_sample draws binary pixels, which needs the Bernoulli likelihood; this "
            f"model's is {model.likelihood.name} (its mean is decode(z))"
        )
    return check_codes(model, z, y)


def check_sample_noise(model: Any, eps: Array, n: int) -> Array:
    """``eps`` of a multi-sample objective: (n, K, latent_dim), any K >= 1."""
    eps = as_array("eps", eps, model.xp)
    latent = model.latent_dim
    if eps.ndim != 3 or eps.shape[0] != n or eps.shape[2] != latent:
        raise ValueError(
            f"eps must have shape ({n}, K, {latent}) for the {model.objective.name} objective "
            f"(K samples per example, e.g. K = k = {model.objective.k}); got {tuple(eps.shape)}"
        )
    width = eps.shape[1] * latent
    flat = as_float_batch("eps", eps.reshape(n, -1), width, "K * latent_dim", model.backend)[0]
    return flat.reshape(eps.shape)


def check_labels(model: Any, y: Array | None, n: int) -> Array | None:
    """Labels ``y`` (n,), integers in ``[0, n_classes)``: required by a conditional model and
    refused by any other."""
    n_classes, xp = model.n_classes, model.xp
    if not n_classes:
        if y is not None:
            raise ValueError("labels y were given but the model is not conditional (n_classes=0)")
        return None
    if y is None:
        raise ValueError(f"a conditional model needs labels y (integers in [0, {n_classes}))")
    y = xp.asarray(as_array("y", y, xp))  # labels may come from the host
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"y must have shape ({n},), one label per example; got {tuple(y.shape)}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    if n:  # one transfer of two scalars to the host
        lo, hi = (int(v) for v in model.backend.to_host(xp.stack([y.min(), y.max()])))
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"labels must lie in [0, {n_classes}), got values in [{lo}, {hi}]")
    return y


def as_array(name: str, a: Any, xp: Any) -> Array:
    """``a`` itself if it is an array, else ``xp.asarray(a)``, failing with ``name`` in the message
    (a ragged list would otherwise fail inside NumPy with a message that names nothing)."""
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return a
    try:
        return xp.asarray(a)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name} must be an array or a rectangular nested list ({err})") from None


def as_float_batch(
    name: str, a: Array, width: int, width_name: str, backend: Backend
) -> tuple[Array, float, float]:
    """Check that ``a`` is a finite 2-D float batch of the right width; cast to the model dtype.

    Returns the cast array and its minimum and maximum, which cross to the host together with
    the count of non-finite values: one transfer per input.
    """
    xp = backend.xp
    a = as_array(name, a, xp)
    if a.ndim != 2:
        hint = " (flatten images first: a.reshape(len(a), -1))" if a.ndim > 2 else ""
        raise ValueError(f"{name} must be 2-D (batch, {width}), got shape {tuple(a.shape)}{hint}")
    if a.shape[1] != width:
        raise ValueError(f"{name} has {a.shape[1]} columns but the model has {width_name}={width}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (0 rows)")
    if a.dtype.kind != "f":
        hint = " (scale pixels to floats first, e.g. x / 255.0)" if a.dtype.kind in "uib" else ""
        raise ValueError(f"{name} must be a floating-point array, got dtype {a.dtype}{hint}")
    given = xp.asarray(a)  # on the device, in its own float type
    a = backend.asarray(given)  # in the model's: a float64 1e300 is infinite in float32
    # The range is the values as given (-1e-111 is below 0, though float32 rounds it to -0).
    stats = ((~xp.isfinite(a)).sum(), given.min(), given.max())
    bad, lo, hi = backend.to_host(xp.stack([v.astype(numpy.float64) for v in stats]))
    if bad:
        raise ValueError(f"{name} contains {int(bad)} NaN or infinite value(s); it must be finite")
    return a, float(lo), float(hi)


def check_state(model: Any, state: dict[str, Any]) -> dict[str, numpy.ndarray]:
    """The host arrays of a state dict that fits ``model.params``: the same names, the same
    shapes, finite values; a ValueError naming what does not fit."""
    params = model.params
    missing, extra = set(params) - set(state), set(state) - set(params)
    if missing or extra:
        parts = [f"lacks {', '.join(sorted(missing))}"] if missing else []
        parts += [f"has unknown {', '.join(sorted(extra))}"] if extra else []
        raise ValueError(f"the state does not fit the model: it {'; it '.join(parts)}")
    arrays = {}
    for name, p in params.items():
        a = numpy.asarray(model.backend.to_host(state[name]))
        if tuple(a.shape) != tuple(p.shape):
            raise ValueError(
                f"{name} has shape {tuple(a.shape)} in the state, the model needs {tuple(p.shape)}"
            )
        if not numpy.isfinite(a).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        arrays[name] = a
    return arrays


def check_quadrants(images: Array | None, n_given: Any, side: Any, parts: tuple = ()) -> None:
    """1, 2 or 3 given quadrants of ``side x side`` images (``side`` even); if given, ``images``
    (B, side^2), and a join's ``parts`` (visible, hidden): (B, n_given side^2 / 4), (B, rest)."""
    if n_given not in (1, 2, 3) or isinstance(n_given, bool):
        raise ValueError(f"n_given is the number of visible quadrants: 1, 2 or 3, got {n_given!r}")
    if check_int("side", side, 2) % 2:
        raise ValueError(f"side must be even (four equal quadrants), got {side}")
    if images is not None and (images.ndim != 2 or images.shape[1] != side * side):
        raise ValueError(f"images must have shape (B, {side * side}), got {tuple(images.shape)}")
    widths = [w * side * side // 4 for w in (n_given, 4 - n_given)]
    if parts and [a.shape for a in parts] != [(len(parts[0]), w) for w in widths]:
        raise ValueError(f"visible and hidden must be (B, {widths[0]}) and (B, {widths[1]})")


def check_visible(model: Any, visible: Array) -> Array:
    """The given part of a batch, (B, visible_dim) finite floats, in the model's dtype."""
    return as_float_batch("visible", visible, model.visible_dim, "visible_dim", model.backend)[0]


def completion_pair(
    model: Any, visible: Array, hidden: Array, validate: bool = True
) -> tuple[Array, Array]:
    """``visible`` (B, visible_dim) and ``hidden`` (B, hidden_dim) with values in [0, 1] (the
    Bernoulli likelihood's), in the model's dtype; checked if ``validate``."""
    if validate:
        visible = check_visible(model, visible)
        hidden, lo, hi = as_float_batch(
            "hidden", hidden, model.hidden_dim, "hidden_dim", model.backend
        )
        if lo < 0 or hi > 1:
            raise ValueError(f"hidden has values in [{lo:g}, {hi:g}]; the Bernoulli needs [0, 1]")
        if hidden.shape[0] != visible.shape[0]:
            raise ValueError(f"visible has {visible.shape[0]} rows, hidden {hidden.shape[0]}")
    return tuple(model.xp.asarray(a, dtype=model.dtype) for a in (visible, hidden))


def completion_inputs(
    model: Any, visible: Array, hidden: Array, eps: Array | None, validate: bool
) -> tuple[Array, Array, Array | None]:
    """:func:`completion_pair`'s two parts, :func:`completion_noise`'s ``eps`` (None without z)."""
    visible, hidden = completion_pair(model, visible, hidden, validate)
    if not model.latent_dim and eps is None:
        return visible, hidden, None
    eps = completion_noise(model, eps, len(visible)) if validate or eps is None else eps
    return visible, hidden, model.xp.asarray(eps, dtype=model.dtype)


def completion_noise(model: Any, eps: Array | None, rows: int) -> Array:
    """``eps`` (rows, latent_dim), checked; drawn from ``model.rng`` if omitted."""
    if eps is None:
        return model.rng.standard_normal((rows, model.latent_dim), dtype=model.dtype)
    eps = as_float_batch("eps", eps, model.latent_dim, "latent_dim", model.backend)[0]
    if eps.shape[0] != rows:
        raise ValueError(f"eps has {eps.shape[0]} rows, visible {rows}")
    return eps
