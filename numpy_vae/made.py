"""MADE: an autoregressive decoder, ``p(x | z) = prod_d Bernoulli(x_d | sigmoid(l_d(x_<d, z)))``.

The MLP decoder makes every pixel independent given z, so everything the pixels share must
pass through z. A decoder that also sees the pixels before ``d`` (in raster order) can model
strokes on its own; if it is strong enough, the ELBO's best use of z is none at all and the
posterior collapses onto the prior (``../shared/seed`` names this the first cause of collapse).
MADE (Germain et al., 2015) gets all D conditionals from one pass of an MLP whose weights are
masked so that output ``d`` depends on inputs ``x_1 .. x_{d-1}`` only.

Degrees. Input ``j`` has degree ``j`` (1..D). Every hidden unit ``k`` gets a degree ``m(k)`` in
``1 .. D-1``: the largest input index it may see. A hidden unit may read a unit of the layer
below whose degree is at most its own (``M[k, j] = 1[m(k) >= m'(j)]``), and output ``d`` may
read a unit of degree below ``d`` (``M[d, k] = 1[d > m(k)]``). Along any path from input ``j`` to
output ``d`` the degrees climb, ``j <= m_1 <= ... <= m_L < d``, so ``l_d`` depends on ``x_j`` only
if ``j < d``: the product of the D conditionals is a normalised distribution over {0, 1}^D.
numpy-vae spreads the degrees of each layer evenly over ``1 .. D-1`` (:func:`degrees`) rather
than drawing them at random as the paper does: the same network for every seed, and every
degree present when a layer has at least D - 1 units.

The decoder, for L hidden layers and context ``c = [z | one-hot y]``::

    a_1 = x (M_1 * W_1)^T + b_1 + c C_1^T          h_l = act(a_l)
    a_l = h_{l-1} (M_l * W_l)^T + b_l + c C_l^T    (l = 2 .. L)
    logits = h_L (M_o * W_o)^T + b_o [+ x (M_x * W_x)^T, the optional direct connection]

z enters every hidden layer through an unmasked Linear ``C_l`` (no bias: ``b_l`` is one
already). Logit ``d`` reads z through the hidden units of degree below ``d`` only, so the first
logit (which reads no hidden unit) ignores z, and early pixels see z through few units: about
``(d - 1) H / (D - 1)`` of the ``H`` in the last hidden layer. A narrow MADE therefore also
narrows z's path to the pixels. Training feeds the data itself as ``x`` (teacher
forcing): one pass gives all D logits and the likelihood is the Bernoulli one on them
(:class:`numpy_vae.likelihoods.Bernoulli`). Sampling cannot: pixel ``d`` needs the drawn
pixels before it, so :meth:`MADEDecoder.sample` makes D passes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy

from numpy_vae.backend import Backend
from numpy_vae.layers import Container, Layer, Linear, MaskedLinear, make_activation

Array = Any


def degrees(n_units: int, input_dim: int) -> numpy.ndarray:
    """Degrees of ``n_units`` hidden units, spread evenly over ``1 .. input_dim - 1``.

    ``m(k) = 1 + floor(k (D - 1) / n_units)`` for ``k = 0 .. n_units - 1``: degree 1 first, every
    degree equally often (to one), never D (a unit of degree D could feed no output).
    """
    return 1 + (numpy.arange(n_units) * (input_dim - 1)) // n_units


def made_masks(
    input_dim: int, hidden_dims: Sequence[int]
) -> tuple[list[numpy.ndarray], numpy.ndarray, numpy.ndarray]:
    """The 0/1 masks of a MADE over ``input_dim`` inputs, as (out, in) float arrays.

    Returns
    -------
    hidden : list of (H_l, H_{l-1}) masks, ``1[m_l(k) >= m_{l-1}(j)]`` (layer 0 is the input,
        of degrees 1 .. D)
    output : (D, H_L) mask ``1[d > m_L(k)]``
    direct : (D, D) mask ``1[d > j]``, strictly lower triangular
    """
    if input_dim < 2:
        raise ValueError(f"a MADE needs at least 2 inputs to order, got input_dim={input_dim}")
    previous = numpy.arange(1, input_dim + 1)
    hidden = []
    for width in hidden_dims:
        m = degrees(width, input_dim)
        hidden.append((m[:, None] >= previous[None, :]).astype(numpy.float64))
        previous = m
    index = numpy.arange(1, input_dim + 1)
    output = (index[:, None] > previous[None, :]).astype(numpy.float64)
    direct = (index[:, None] > index[None, :]).astype(numpy.float64)
    return hidden, output, direct


class MADEDecoder(Container):
    """The masked autoregressive decoder: logits of ``p(x_d | x_<d, c)`` for every ``d``.

    Parameters
    ----------
    input_dim : int
        D, the number of pixels (at least 2).
    context_dim : int
        Width of the context ``c`` (``latent_dim``, plus ``n_classes`` in a conditional model).
    hidden_dims : sequence of int
        Widths of the masked hidden layers.
    activation : str
        Hidden activation (:data:`numpy_vae.layers.ACTIVATIONS`).
    backend, rng : as for :class:`numpy_vae.layers.Linear`
    direct : bool
        Add the masked direct connection from the pixels to the logits.
    made_z : bool
        Let the context into the hidden layers (``ModelConfig.made_z``). Without it the decoder
        is the autoregressive model alone (its ``log p(x)`` is exact) and the context gradient
        is 0.
    leaky_relu_slope : float
        The slope of the ``leaky_relu`` activation for negative inputs.

    Parameters are named as ``torch.nn.Module`` names them: ``masked.<l>.weight`` and
    ``.bias`` (the hidden layers, then the output layer), ``context.<l>.weight`` and
    ``direct.weight``.
    """

    def __init__(
        self,
        input_dim: int,
        context_dim: int,
        hidden_dims: Sequence[int],
        activation: str,
        backend: Backend,
        rng: numpy.random.Generator,
        direct: bool = False,
        made_z: bool = True,
        leaky_relu_slope: float = 0.01,
    ) -> None:
        self.xp, self.special = backend.xp, backend.special
        self.input_dim, self.context_dim = input_dim, context_dim
        hidden, output, direct_mask = made_masks(input_dim, hidden_dims)
        self.masked = [MaskedLinear(mask, backend, rng) for mask in hidden]
        self.masked.append(MaskedLinear(output, backend, rng))
        self.context = (
            [Linear(context_dim, width, backend, rng, bias=False) for width in hidden_dims]
            if made_z
            else []
        )
        self.direct = MaskedLinear(direct_mask, backend, rng, bias=False) if direct else None
        slope = leaky_relu_slope
        self.activations = [make_activation(activation, backend, slope) for _ in hidden_dims]
        self.d_x: Array | None = None

    name = "made"
    binary_pixels = True  # the sampler feeds its own 0/1 draws back in
    reads_pixels = True  # logit d reads x_<d
    settings = ("made_hidden", "made_direct", "made_z")  # the ModelConfig fields of MADE alone

    @classmethod
    def from_config(
        cls, input_dim: int, context_dim: int, config: Any, backend: Backend, rng: Any
    ) -> MADEDecoder:
        """The decoder of a :class:`~numpy_vae.config.ModelConfig` (``made_hidden``,
        ``made_direct``, ``made_z``, ``activation``, ``leaky_relu_slope``), initialised from
        ``rng``."""
        return cls(input_dim, context_dim, config.made_hidden, config.activation, backend, rng,
                   direct=config.made_direct, made_z=config.made_z,
                   leaky_relu_slope=config.leaky_relu_slope)  # fmt: skip

    def mean(self, context: Array, likelihood: Any, rng: Any) -> Array:
        """The mean of p(x | z) has no closed form: the probabilities ``p(x_d = 1 | x_<d, z)``
        along one pixel-by-pixel draw from ``rng`` (:meth:`sample`), its smooth picture."""
        u = rng.random((context.shape[0], self.input_dim), dtype=context.dtype)
        return self.sample(context, u)[1]

    def named_layers(self) -> Iterator[tuple[str, Layer]]:
        for i, layer in enumerate(self.masked):
            yield f"masked.{i}", layer
        for i, layer in enumerate(self.context):
            yield f"context.{i}", layer
        if self.direct is not None:
            yield "direct", self.direct

    def forward(self, context: Array, x: Array) -> Array:
        """Logits (B, D) of ``p(x_d = 1 | x_<d, c)``, from the context ``c`` (B, context_dim)
        and the pixels ``x`` (B, D) (teacher forcing: the data itself in training)."""
        h = x
        for i, activation in enumerate(self.activations):
            a = self.masked[i].forward(h)
            if self.context:
                a = a + self.context[i].forward(context)
            h = activation.forward(a)
        logits = self.masked[-1].forward(h)
        if self.direct is not None:
            logits = logits + self.direct.forward(x)
        return logits

    def backward(self, d_logits: Array) -> Array:
        """dL/dc from ``d_logits = dL/dlogits``; writes every parameter's gradient, and
        ``self.d_x = dL/dx`` (the pixels' gradient, which the autoregressive test reads).

        The arrows, last layer first:

        1. ``d_h_L = d_logits (M_o * W_o)``, and ``dW_o = M_o * (d_logits^T h_L)``
           (:meth:`MaskedLinear.backward`); the direct layer adds ``d_logits (M_x * W_x)`` to
           ``d_x``.
        2. For each hidden layer, last first: ``d_a_l = d_h_l * act'(a_l)``. ``a_l`` fans out to
           nothing but ``h_l``; it is reached from ``h_{l-1}`` through ``M_l * W_l`` and from
           ``c`` through ``C_l``, so ``d_h_{l-1} = d_a_l (M_l * W_l)`` and ``c`` collects
           ``d_a_l C_l`` from every layer (one variable, several paths: the gradients add).
        3. ``d_x = d_a_1 (M_1 * W_1)`` [+ the direct part].
        """
        d_h = self.masked[-1].backward(d_logits)  # 1
        d_x = self.direct.backward(d_logits) if self.direct is not None else 0
        n = d_logits.shape[0]
        d_context = self.xp.zeros((n, self.context_dim), dtype=d_logits.dtype)
        for i in reversed(range(len(self.activations))):  # 2
            d_a = self.activations[i].backward(d_h)
            if self.context:
                d_context = d_context + self.context[i].backward(d_a)
            d_h = self.masked[i].backward(d_a)
        self.d_x = d_h + d_x  # 3
        return d_context

    def sample(self, context: Array, u: Array) -> tuple[Array, Array]:
        """Draw ``x ~ p(x | c)`` pixel by pixel: D passes, each fixing one pixel.

        Parameters
        ----------
        context : (B, context_dim)
        u : (B, D) uniforms in [0, 1): pixel ``d`` is ``1[u_d < p_d]``, so that the draw is a
            deterministic function of ``u`` (the caller's generator draws it)

        Returns
        -------
        x : (B, D) the binary sample
        p : (B, D) ``p_d = p(x_d = 1 | x_<d, c)`` along the sample, the probability each pixel
            was drawn with (the smooth picture of the sample)

        Pass ``d`` runs the whole network on the pixels drawn so far (the later ones are 0,
        which the masks make irrelevant) and reads logit ``d`` alone.
        """
        xp = self.xp
        x = xp.zeros((context.shape[0], self.input_dim), dtype=u.dtype)
        p = xp.zeros_like(x)
        for d in range(self.input_dim):
            p[:, d] = self.special.expit(self.forward(context, x)[:, d])
            x[:, d] = u[:, d] < p[:, d]
        return x, p
