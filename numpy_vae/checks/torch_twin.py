"""A PyTorch twin of :class:`numpy_vae.VAE`, written the plain autograd way, and a parity harness.

The twin is what anyone would write in PyTorch: ``torch.nn.Linear`` layers in ``nn.Sequential``
containers, ``F.binary_cross_entropy_with_logits(reduction="sum")``, the closed-form KL
``-0.5 * sum(1 + logvar - mu^2 - exp(logvar))``, ``torch.clamp`` for free bits, ``loss.backward()``
and ``torch.optim.Adam``. The multi-sample objectives (``vae``, ``iwae``) write the Gaussian log
densities out (``log N(z; 0, I) = -1/2 sum(z^2 + log 2 pi)``, and ``log q(z|x)`` at
``z = mu + sigma eps`` as ``-1/2 sum(eps^2 + logvar + log 2 pi)``), use ``torch.logsumexp`` for
the IWAE bound, ``detach()`` and ``torch.distributions.Normal(...).log_prob`` for the density an
estimator holds fixed (STL, DReG), and ``torch.autograd.grad`` on separate parameter lists where
the decoder and the encoder differentiate different surrogates (DReG). The MADE decoder
(``decoder="made"``) is a small ``nn.Module`` of :class:`MaskedLinear` layers
(``F.linear(x, weight * mask, bias)``, the mask a non-persistent buffer) and bias-free
``nn.Linear`` context layers for ``[z | one-hot y]``, fed the data itself (teacher forcing). It
shares no code with numpy-vae's forward or backward pass: a :class:`numpy_vae.VAE` is read only
for its configuration and its initial weights, and the MADE masks are built by
:func:`numpy_vae.made.made_masks` (the masks are the architecture, not the math under test;
``tests/test_torch_parity.py`` checks them on their own through autograd's Jacobian).

::

    numpy-vae  ─ config, weights ─▶  TorchVAE
        │                               │
        │   same x, y, eps, kl_weight   │
        ▼                               ▼
    hand-written gradients   ≟    autograd gradients        (float64: to ~1e-15)
    numpy_vae.Adam           ≟    torch.optim.Adam          (100 steps: to ~1e-13)

Because ``state_dict`` keys equal numpy-vae's parameter names (``encoder.0.weight``, ...,
``decoder.2.bias``; for MADE ``decoder.masked.<l>.weight``, ``decoder.context.<l>.weight``,
``decoder.direct.weight``), weights copy one-to-one and every comparison is by name.

The same twin, in float32, is the PyTorch peer that ``scripts/benchmark.py`` times (its epoch and
its ``--iwae`` step, through :func:`train_step`), so the parity tests also vouch for the model
that the speed comparison runs. That is why its training path holds only what a plain PyTorch
script computes: the fused ``binary_cross_entropy_with_logits``, the densities written out, and
no reported figure (``recon``, ``kl``) unless it is read.

PyTorch is an optional dependency: ``import numpy_vae`` does not import this module, and the
benchmarks import it only in the subprocesses that time PyTorch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.distributions import Normal
except ImportError as err:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "numpy_vae.checks.torch_twin needs PyTorch, which is an optional dependency of numpy-vae. "
        "Install the CPU build with `pip install torch==2.13.0` "
        '(or `pip install -e ".[torch]"`).'
    ) from err

from numpy_vae.backend import get_backend
from numpy_vae.checks.variants import VARIANTS, Variant  # noqa: F401  (re-exported)
from numpy_vae.config import ModelConfig
from numpy_vae.gradcheck import relative_error
from numpy_vae.made import made_masks
from numpy_vae.model import VAE
from numpy_vae.optim import Adam
from numpy_vae.training.data import binarize

# Bounds on float64 agreement (relative difference of an array: max|a - b| / max(|a|, |b|)).
# One forward/backward differs only by the order of rounding (~1e-16 per operation); 100 Adam
# steps let those differences feed back through the weights, still far below 1e-10. The IWAE
# bound's softmax weights see log w's rounding (about 1e-13 nats at log w ~ -550): its gradients
# agree to about 3e-14, still 30 times inside the bound.
ONE_STEP_BOUND = 1e-12
TRAINED_BOUND = 1e-10

TORCH_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,  # negative_slope: ModelConfig.leaky_relu_slope (TorchVAE)
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------------- the twin
def kl_elements(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, 1))`` of every latent coordinate, (B, L)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


@dataclass
class TorchLoss:
    """One forward pass of the twin, summed over the batch.

    Attributes
    ----------
    loss : 0-d tensor
        What training differentiates.
    nll : tensor
        ``-log p(x|z)``: summed over the batch (0-d) for the ``elbo`` objective, per example and
        sample (B, K) for ``vae`` and ``iwae``.
    mu, logvar : tensors (B, L)
        The encoder's outputs.
    encoder_loss : 0-d tensor or None
        The surrogate whose gradient the encoder and head take when it is not ``loss``'s (DReG);
        ``None`` when every parameter differentiates ``loss``. :meth:`TorchVAE.backward` reads it.

    The parts reported beside the loss, ``recon``, ``kl`` (0-d) and ``kl_per_dim`` (L,), are
    computed when read: a training step reads only ``loss``, and the benchmark's PyTorch step
    must not pay for figures nobody reads (at batch 20 and K = 1 they cost a few percent).
    """

    loss: torch.Tensor
    nll: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    encoder_loss: torch.Tensor | None = None

    @property
    def recon(self) -> torch.Tensor:
        """``-log p(x|z)`` summed over the batch; with K samples per example, their mean."""
        return self.nll if self.nll.dim() == 0 else self.nll.mean(dim=1).sum()

    @property
    def kl(self) -> torch.Tensor:
        """The closed-form KL term, summed over the batch."""
        return kl_elements(self.mu, self.logvar).sum()

    @property
    def kl_per_dim(self) -> torch.Tensor:
        """The closed-form KL of each latent dimension, summed over the batch, (L,)."""
        return kl_elements(self.mu, self.logvar).sum(dim=0)


class MaskedLinear(nn.Linear):
    """``nn.Linear`` through a fixed 0/1 mask: ``y = x (M * W)^T + b`` (MADE's layer).

    The mask is a buffer registered with ``persistent=False``: it follows ``.to()`` but is not in
    ``state_dict``, so the layer's keys are ``weight`` and ``bias`` as for ``nn.Linear``. The
    weight is used as ``weight * mask`` in every forward pass, so autograd's weight gradient is
    ``M * dL/dV`` by itself (0 wherever the mask is 0).
    """

    def __init__(self, mask: np.ndarray, bias: bool = True, dtype: torch.dtype = torch.float64):
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features, bias=bias, dtype=dtype)
        self.register_buffer("mask", torch.tensor(mask, dtype=dtype), persistent=False)
        with torch.no_grad():
            self.weight.mul_(self.mask)  # a standalone twin starts with its masked weights at 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class TorchMADE(nn.Module):
    """MADE decoder: logits of ``p(x_d = 1 | x_<d, c)`` from the context ``c`` and the pixels.

    ``a_1 = MaskedLinear_1(x) + C_1 c``, ``a_l = MaskedLinear_l(h_{l-1}) + C_l c``, ``h_l =
    act(a_l)``, ``logits = MaskedLinear_out(h_L) [+ direct(x)]``, as in :mod:`numpy_vae.made`.
    ``C_l`` are bias-free ``nn.Linear`` layers (absent when ``uses_z`` is False).

    Parameters
    ----------
    input_dim, context_dim : int
        D, and the width of ``c = [z | one-hot y]``.
    hidden_dims : tuple of int
    act : callable returning the activation module
    direct, uses_z : bool
        As ``ModelConfig.made_direct`` and ``made_z``.
    dtype : torch.dtype
    """

    def __init__(
        self,
        input_dim: int,
        context_dim: int,
        hidden_dims: tuple[int, ...],
        act: Callable[[], nn.Module],
        direct: bool = False,
        uses_z: bool = True,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        # The masks come from the specification's made_masks: which connection exists is the
        # architecture, copied like the weights; the forward and backward math is the twin's own.
        hidden, output, direct_mask = made_masks(input_dim, hidden_dims)
        self.masked = nn.ModuleList(
            [MaskedLinear(m, dtype=dtype) for m in hidden] + [MaskedLinear(output, dtype=dtype)]
        )
        self.context = nn.ModuleList(
            [nn.Linear(context_dim, w, bias=False, dtype=dtype) for w in hidden_dims]
            if uses_z
            else []
        )
        self.direct = MaskedLinear(direct_mask, bias=False, dtype=dtype) if direct else None
        self.activations = nn.ModuleList([act() for _ in hidden_dims])

    def forward(self, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, act in enumerate(self.activations):
            a = self.masked[i](h)
            if len(self.context):
                a = a + self.context[i](context)
            h = act(a)
        logits = self.masked[-1](h)
        if self.direct is not None:
            logits = logits + self.direct(x)
        return logits


class TorchVAE(nn.Module):
    """The VAE of :class:`numpy_vae.VAE`, in PyTorch, differentiated by autograd.

    Parameters
    ----------
    input_dim : int
        As for :class:`numpy_vae.VAE`.
    config : ModelConfig
        The model's hyperparameters, as for :class:`numpy_vae.VAE`.
    dtype : torch.dtype
        Parameter and activation type, default ``torch.float64``.
    """

    def __init__(
        self,
        input_dim: int = 784,
        config: ModelConfig | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        config = ModelConfig() if config is None else config
        act = TORCH_ACTIVATIONS[config.activation]
        if config.activation == "leaky_relu":
            act = partial(nn.LeakyReLU, config.leaky_relu_slope)
        hidden_dims, latent_dim, n_classes = config.hidden_dims, config.latent_dim, config.n_classes
        self.latent_dim, self.n_classes = latent_dim, n_classes
        self.likelihood, self.gaussian_sigma = config.likelihood, config.gaussian_sigma
        self.beta, self.free_bits = config.beta, config.free_bits
        self.objective, self.k, self.estimator = config.objective, config.k, config.estimator
        self.made = config.decoder == "made"

        # nn.Sequential numbers every module, activations included: Linear layers sit at even
        # indices, which is how numpy-vae names them too.
        widths = (input_dim + n_classes, *hidden_dims)
        encoder: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            encoder += [nn.Linear(fan_in, fan_out, dtype=dtype), act()]
        self.encoder = nn.Sequential(*encoder)
        self.head = nn.Linear(hidden_dims[-1], 2 * latent_dim, dtype=dtype)
        self.decoder: nn.Module
        if self.made:
            self.decoder = TorchMADE(
                input_dim,
                latent_dim + n_classes,
                config.made_hidden,
                act,
                direct=config.made_direct,
                uses_z=config.made_z,
                dtype=dtype,
            )
            return
        widths = (latent_dim + n_classes, *reversed(hidden_dims))
        decoder: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            decoder += [nn.Linear(fan_in, fan_out, dtype=dtype), act()]
        decoder.append(nn.Linear(hidden_dims[0], input_dim, dtype=dtype))
        self.decoder = nn.Sequential(*decoder)

    def noise_shape(self, n: int) -> tuple[int, ...]:
        """The shape of ``eps`` for a batch of ``n``: (n, L), or (n, K, L) for ``vae`` and
        ``iwae``."""
        return (n, self.latent_dim) if self.objective == "elbo" else (n, self.k, self.latent_dim)

    def decode(self, dec_in: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Decoder output for ``dec_in = [z | one-hot y]``; the MADE decoder also reads the
        pixels ``x`` (teacher forcing: the data itself)."""
        return self.decoder(dec_in, x) if self.made else self.decoder(dec_in)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(decoder output (B, D), mu (B, L), logvar (B, L))`` for noise ``eps`` (B, L)."""
        onehot = F.one_hot(y, self.n_classes).to(x.dtype) if self.n_classes else None
        enc_in = x if onehot is None else torch.cat([x, onehot], dim=1)
        mu, logvar = self.head(self.encoder(enc_in)).split(self.latent_dim, dim=1)
        z = mu + torch.exp(0.5 * logvar) * eps  # std = exp(logvar / 2)
        dec_in = z if onehot is None else torch.cat([z, onehot], dim=1)
        return self.decode(dec_in, x), mu, logvar

    def loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None,
        eps: torch.Tensor,
        kl_weight: float | None = None,
    ) -> TorchLoss:
        """Negative ELBO (or negative bound) summed over the batch.

        ``eps`` is (B, L) for the ``elbo`` objective, (B, K, L) for ``vae`` and ``iwae``.
        :meth:`backward` differentiates the result.
        """
        if self.objective != "elbo":
            if kl_weight is not None and float(kl_weight) != 1:
                raise ValueError(
                    f"the {self.objective} objective has no KL weight, got {kl_weight}"
                )
            return self.sampled_loss(x, y, eps)
        out, mu, logvar = self(x, y, eps)
        if self.likelihood == "bernoulli":
            recon = F.binary_cross_entropy_with_logits(out, x, reduction="sum")
        else:
            var = self.gaussian_sigma**2
            n, d = x.shape
            recon = F.mse_loss(out, x, reduction="sum") / (2 * var) + (
                n * d / 2 * math.log(2 * math.pi * var)
            )
        kl_elem = kl_elements(mu, logvar)
        if self.free_bits > 0:
            # B * sum_j max(lambda, mean_batch KL_j); clamp passes the gradient at the kink.
            kl_objective = x.shape[0] * torch.clamp(kl_elem.mean(dim=0), min=self.free_bits).sum()
        else:
            kl_objective = kl_elem.sum()
        w = self.beta if kl_weight is None else float(kl_weight)
        # The plain ELBO (w = 1) is recon + KL, as a plain script writes it and the benchmark
        # times it; multiplying by 1 would change no value, only add an operation.
        loss = recon + (kl_objective if w == 1 else w * kl_objective)
        return TorchLoss(loss=loss, nll=recon, mu=mu, logvar=logvar)

    def sampled_loss(self, x: torch.Tensor, y: torch.Tensor | None, eps: torch.Tensor) -> TorchLoss:
        """The negative ``vae`` or ``iwae`` bound summed over the batch, for ``eps`` (B, K, L).

        ``log w_k = log p(x|z_k) + log N(z_k; 0, I) - log N(z_k; mu, sigma^2)`` with
        ``z_k = mu + sigma * eps_k``; the VAE bound is ``mean_k log w_k``, the IWAE bound
        ``logsumexp_k log w_k - log K``. ``recon`` and ``kl`` are reported as numpy-vae reports
        them: ``-mean_k log p(x|z_k)`` and the closed-form KL, each summed over the batch.

        The two Gaussian densities are written out rather than taken from
        ``torch.distributions.Normal``, whose ``log_prob`` (with its argument checks) took about
        a tenth of the benchmark's step at K = 1. ``log q`` is written in ``eps``, since
        ``(z_k - mu) / sigma = eps_k``; autograd of it still gives the total derivative
        (path and score together), which is the plain reparameterized gradient.
        """
        n, k, latent = eps.shape
        onehot = F.one_hot(y, self.n_classes).to(x.dtype) if self.n_classes else None
        enc_in = x if onehot is None else torch.cat([x, onehot], dim=1)
        mu, logvar = self.head(self.encoder(enc_in)).split(self.latent_dim, dim=1)
        std = torch.exp(0.5 * logvar)
        z = mu.unsqueeze(1) + std.unsqueeze(1) * eps  # (B, K, L)
        # Decoder rows example-major (row b * K + k), each beside its own example's label.
        dec_in = z.reshape(n * k, latent)
        if onehot is not None:
            dec_in = torch.cat([dec_in, onehot.repeat_interleave(k, dim=0)], dim=1)
        x_rows = x.repeat_interleave(k, dim=0)
        out = self.decode(dec_in, x_rows)
        if self.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(out, x_rows, reduction="none").sum(-1)
        else:
            nll = -Normal(out, self.gaussian_sigma).log_prob(x_rows).sum(-1)
        nll = nll.view(n, k)  # -log p(x|z_k), (B, K)
        log_pz = -0.5 * (z * z + LOG_2PI).sum(-1)
        log_qz = -0.5 * (eps * eps + logvar.unsqueeze(1) + LOG_2PI).sum(-1)
        log_w = log_pz - nll - log_qz
        if self.objective == "vae":
            bound = log_w.mean(dim=1)
        else:
            bound = torch.logsumexp(log_w, dim=1) - math.log(k)

        loss, encoder_loss = -bound.sum(), None
        if self.estimator != "reparam":
            # q's density with its parameters held: the score term is dropped, the path (z)
            # still moves with mu and sigma. It must be evaluated at z (in eps it would not move
            # at all), so here Normal's log_prob serves.
            log_q_held = Normal(mu.detach().unsqueeze(1), std.detach().unsqueeze(1)).log_prob(z)
            log_w_held = log_pz - nll - log_q_held.sum(-1)  # same values as log_w
            if self.estimator == "stl":
                # Every parameter may take this one: the decoder sees log p(x|z_k) alone, and
                # through it this surrogate and the bound have the same gradient.
                loss = -(torch.logsumexp(log_w_held, dim=1) - math.log(k)).sum()
            else:
                # DReG: the squared normalized weights held fixed. Its decoder gradient would be
                # sum_k w~_k^2 grad log p(x|z_k), not the bound's, so only the encoder takes it.
                w2 = torch.softmax(log_w, dim=1).detach() ** 2
                encoder_loss = -(w2 * log_w_held).sum()
        return TorchLoss(loss=loss, nll=nll, mu=mu, logvar=logvar, encoder_loss=encoder_loss)

    def backward(self, parts: TorchLoss) -> None:
        """Write ``p.grad`` of every parameter from one :meth:`loss` (gradients zeroed first).

        ``parts.loss.backward()``; or, for DReG, the decoder's gradient from ``loss`` (the plain
        IWAE bound) and the encoder's and head's from ``encoder_loss``, by
        ``torch.autograd.grad`` on the two parameter lists.
        """
        if parts.encoder_loss is None:
            parts.loss.backward()
            return
        decoder = list(self.decoder.parameters())
        encoder = [*self.encoder.parameters(), *self.head.parameters()]
        decoder_grads = torch.autograd.grad(parts.loss, decoder, retain_graph=True)
        encoder_grads = torch.autograd.grad(parts.encoder_loss, encoder)
        for p, g in zip(decoder + encoder, decoder_grads + encoder_grads, strict=True):
            p.grad = g


def twin_of(model: VAE) -> TorchVAE:
    """A :class:`TorchVAE` with ``model``'s configuration, dtype and (copied) weights.

    Parameters
    ----------
    model : numpy_vae.VAE
        Read for ``config()``, ``dtype`` and ``params`` only.

    Returns
    -------
    TorchVAE
        Owns its own tensors; later changes to ``model`` do not reach it.
    """
    twin = TorchVAE(model.input_dim, model.hparams, dtype=TORCH_DTYPES[np.dtype(model.dtype).name])
    load_params(twin, model.params)
    return twin


def load_params(twin: TorchVAE, params: dict[str, Any]) -> None:
    """Copy named arrays into the twin; ``strict`` loading proves the names match one-to-one."""
    dtype = next(twin.parameters()).dtype
    twin.load_state_dict(
        {name: torch.tensor(np.asarray(a), dtype=dtype) for name, a in params.items()},
        strict=True,
    )


def to_tensor(a: Any, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """A torch copy of a NumPy array (``None`` stays ``None``); integer arrays stay integer."""
    if a is None:
        return None
    a = np.asarray(a)
    if a.dtype.kind in "iu":
        return torch.tensor(a, dtype=torch.int64)
    return torch.tensor(a, dtype=dtype)


def twin_loss_backward(
    twin: TorchVAE,
    x: Any,
    y: Any = None,
    eps: Any = None,
    kl_weight: float | None = None,
    grad: bool = True,
) -> dict[str, Any]:
    """One loss (and, with ``grad``, one ``backward()``) of the twin on NumPy inputs.

    Parameters
    ----------
    twin : TorchVAE
    x : array (B, D); y : int array (B,) or None
        The batch and labels (copied into tensors).
    eps : array (B, L), or (B, K, L) for the ``vae`` and ``iwae`` objectives
        The reparameterization noise.
    kl_weight : float, optional
        Weight of the KL term, default ``twin.beta``.
    grad : bool
        Zero the gradients, then run :meth:`TorchVAE.backward` so that ``p.grad`` holds this
        batch's.

    Returns
    -------
    dict
        ``loss``, ``recon``, ``kl`` (floats) and ``kl_per_dim`` (array (L,)).
    """
    dtype = next(twin.parameters()).dtype
    twin.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(grad):
        parts = twin.loss(to_tensor(x, dtype), to_tensor(y), to_tensor(eps, dtype), kl_weight)
        if grad:
            twin.backward(parts)
    with torch.no_grad():  # the reported parts are figures, not part of any graph
        return {
            "loss": parts.loss.item(),
            "recon": parts.recon.item(),
            "kl": parts.kl.item(),
            "kl_per_dim": parts.kl_per_dim.numpy().copy(),
        }


def twin_params(twin: TorchVAE) -> dict[str, np.ndarray]:
    """Copies of the twin's parameters as NumPy arrays, by ``state_dict`` name."""
    return {name: p.detach().numpy().copy() for name, p in twin.named_parameters()}


def twin_grads(twin: TorchVAE) -> dict[str, np.ndarray]:
    """Copies of the twin's gradients (``p.grad``) as NumPy arrays, by parameter name."""
    return {name: p.grad.detach().numpy().copy() for name, p in twin.named_parameters()}


def twin_adam(
    twin: TorchVAE,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Adam:
    """``torch.optim.Adam`` over the twin's parameters.

    ``foreach=False`` pins the single-tensor implementation, which is what PyTorch uses on CPU by
    default today and what :class:`numpy_vae.Adam` orders its operations after.
    """
    return torch.optim.Adam(twin.parameters(), lr=lr, betas=betas, eps=eps, foreach=False)


def train_step(
    twin: TorchVAE,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    eps: torch.Tensor | None = None,
) -> TorchLoss:
    """One training step on a batch that is already a tensor: loss, backward, optimizer step.

    This is the step that ``scripts/benchmark.py`` times (the epoch and the ``--iwae`` step), so
    it does nothing a plain PyTorch training loop would not: no copy, no ``.item()`` (which
    would wait for the result), no reported figure unless the caller reads one.

    Parameters
    ----------
    twin : TorchVAE
    optimizer : torch.optim.Optimizer
        Over ``twin``'s parameters (e.g. :func:`twin_adam`).
    x : tensor (B, D)
        The batch, in the twin's dtype; y : int64 tensor (B,) or None, its labels.
    eps : tensor of shape ``twin.noise_shape(B)``, optional
        The reparameterization noise; by default drawn with ``torch.randn`` in ``x``'s dtype.

    Returns
    -------
    TorchLoss
        The forward pass, from the parameters before the step; ``p.grad`` holds its gradients.
    """
    if eps is None:
        eps = torch.randn(twin.noise_shape(x.shape[0]), dtype=x.dtype, device=x.device)
    parts = twin.loss(x, y, eps)
    optimizer.zero_grad()
    twin.backward(parts)
    optimizer.step()
    return parts


# ---------------------------------------------------------------------------------- data
def synthetic_mnist(
    n: int = 2048, n_classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-shaped synthetic images: a few blurred strokes per class, jittered per example.

    Parameters
    ----------
    n : int
        Number of images.
    n_classes : int
        Number of class templates (labels ``0 .. n_classes-1``).
    seed : int
        Seeds everything.

    Returns
    -------
    grey : float64 array (n, 784)
        Intensities in [0, 1], mean about 0.12 (MNIST's is 0.13).
    binary : float64 array (n, 784)
        One Bernoulli draw of ``grey`` (values 0 and 1), like dynamically binarized MNIST.
    labels : int64 array (n,)
    """
    rng = np.random.default_rng(seed)
    side = 28
    labels = rng.integers(0, n_classes, size=n)
    # Each class: 4 Gaussian blobs of ink (width 2 pixels) centred in the middle 16x16 pixels;
    # each example shifts the whole template by up to 2 pixels and each blob by up to 1, so the
    # data has structure a VAE can learn, the border stays blank as in MNIST, and no two images
    # are equal.
    centres = rng.uniform(6, 22, size=(n_classes, 4, 2))
    offsets = rng.uniform(-2, 2, size=(n, 1, 2)) + rng.uniform(-1, 1, size=(n, 4, 2))
    blobs = centres[labels] + offsets  # (n, 4, 2)
    grid = np.arange(side, dtype=np.float64)
    dr = grid[None, None, :] - blobs[:, :, 0, None]  # (n, 4, 28)
    dc = grid[None, None, :] - blobs[:, :, 1, None]
    ink = np.einsum("nbr,nbc->nrc", np.exp(-(dr**2) / 8), np.exp(-(dc**2) / 8))
    grey = np.clip(ink.reshape(n, side * side), 0.0, 1.0)
    binary = binarize(grey, "dynamic", rng)
    return grey, binary, labels.astype(np.int64)


def batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Index arrays of successive batches, each epoch a fresh permutation (no replacement)."""
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


# ---------------------------------------------------------------------------------- harness
@dataclass
class StepRow:
    """Figures of one training step (1-based ``step``).

    ``loss`` (numpy-vae's) and ``loss_diff``, ``grad_diff`` (the largest over all parameters)
    are measured before the update, ``param_diff`` (the largest) after it; ``*_diff`` are relative
    differences numpy-vae vs torch. ``clamped`` counts the latent dimensions held at the
    free-bits allowance (zero KL gradient) in this batch.
    """

    step: int
    kl_weight: float
    loss: float
    loss_diff: float
    grad_diff: float
    param_diff: float
    clamped: int = 0


@dataclass
class ParityReport:
    """Agreement of numpy-vae and its torch twin over a short training run.

    Attributes
    ----------
    variant, dtype : str
    steps : int
    config : dict
        The numpy-vae model's configuration.
    one_step : dict name -> float
        Relative differences after the first forward/backward, from identical weights:
        ``loss``, ``recon``, ``kl``, ``kl_per_dim`` and ``grad/<name>`` for every parameter.
    trained : dict name -> float
        Relative difference of every parameter after ``steps`` Adam steps.
    rows : list of StepRow
    seconds : dict
        Wall time spent in numpy-vae and in torch.
    failures : list of str
        Bounds exceeded (checked in float64 only).
    """

    variant: str
    dtype: str
    steps: int
    config: dict[str, Any]
    one_step: dict[str, float]
    trained: dict[str, float]
    rows: list[StepRow]
    seconds: dict[str, float]
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def max_one_step_loss(self) -> float:
        return max(self.one_step[k] for k in ("loss", "recon", "kl", "kl_per_dim"))

    @property
    def max_one_step_grad(self) -> float:
        return max(v for k, v in self.one_step.items() if k.startswith("grad/"))

    @property
    def max_trained_param(self) -> float:
        return max(self.trained.values(), default=0.0)

    def to_json(self) -> dict[str, Any]:
        """Plain-Python figures for ``json.dump``."""
        out = asdict(self)
        out.update(
            ok=self.ok,
            max_one_step_loss=self.max_one_step_loss,
            max_one_step_grad=self.max_one_step_grad,
            max_trained_param=self.max_trained_param,
        )
        return out


def scalar_diff(a: float, b: float) -> float:
    """|a - b| / max(|a|, |b|), 0 when both are 0: the relative difference of two numbers."""
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def compare_once(
    model: VAE,
    twin: TorchVAE,
    x: np.ndarray,
    y: np.ndarray | None,
    eps: np.ndarray,
    kl_weight: float | None = None,
) -> dict[str, float]:
    """Run one loss and backward on both; relative differences of the loss parts and gradients.

    Parameters
    ----------
    model : numpy_vae.VAE
    twin : TorchVAE
        Holding the same weights as ``model`` (see :func:`twin_of`).
    x : array (B, D); y : int array (B,) or None
    eps : array of shape ``model.noise_shape(B)``
        (B, L), or (B, K, L) for the ``vae`` and ``iwae`` objectives.
    kl_weight : float, optional
        Default: the models' ``beta``.

    Returns
    -------
    dict
        ``loss``, ``recon``, ``kl``, ``kl_per_dim`` and ``grad/<name>`` for every parameter.
        Leaves this batch's gradients in ``model.grads`` and in the twin's ``p.grad``.
    """
    parts = model.loss(x, y, eps=eps, kl_weight=kl_weight)
    theirs = twin_loss_backward(twin, x, y, eps, kl_weight)
    return _diffs(parts, theirs, model.grads, twin_grads(twin))


def _diffs(
    parts: Any, theirs: dict[str, Any], grads: dict[str, Any], their_grads: dict[str, Any]
) -> dict[str, float]:
    diffs = {
        "loss": scalar_diff(float(parts.loss), theirs["loss"]),
        "recon": scalar_diff(float(parts.recon), theirs["recon"]),
        "kl": scalar_diff(float(parts.kl), theirs["kl"]),
        "kl_per_dim": relative_error(parts.kl_per_dim, theirs["kl_per_dim"]),
    }
    for name, g in grads.items():
        diffs[f"grad/{name}"] = relative_error(g, their_grads[name])
    return diffs


def param_diffs(model: VAE, twin: TorchVAE) -> dict[str, float]:
    """Relative difference of every parameter, numpy-vae vs twin."""
    theirs = twin_params(twin)
    return {name: relative_error(p, theirs[name]) for name, p in model.params.items()}


def compare_training(
    variant: str = "default",
    steps: int = 100,
    dtype: str = "float64",
    hidden_dims: tuple[int, ...] = (400,),
    latent_dim: int = 20,
    batch_size: int = 128,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
    lr: float = 1e-3,
    log: Callable[[StepRow], None] | None = None,
    made_hidden: tuple[int, ...] | None = None,
) -> ParityReport:
    """Train numpy-vae and its torch twin side by side on identical batches and noise.

    Both start from numpy-vae's initial weights; each step both see the same batch, the same
    ``eps`` (drawn on the NumPy side, of shape ``model.noise_shape(batch_size)``: (B, K, L) for
    the multi-sample objectives) and the same KL weight, then take one Adam step.

    Parameters
    ----------
    variant : str
        A key of :data:`VARIANTS`.
    steps : int
        Adam steps, >= 1.
    dtype : {"float64", "float32"}
        Both sides' type. Bounds are checked in float64 only.
    hidden_dims, latent_dim : model widths (input is 784).
    batch_size : int
    data : (images, labels), optional
        Images (N, 784) in [0, 1] and int labels (N,); default :func:`synthetic_mnist` (binary
        images for the Bernoulli likelihood, grey levels for the Gaussian one). The MADE
        variants threshold the images at 0.5 (binary images are left as they are).
    seed : int
        Seeds the weights, the batch order and the noise.
    lr : float
        Adam learning rate (betas 0.9, 0.999, eps 1e-8 on both sides).
    log : callable, optional
        Called with each :class:`StepRow`.
    made_hidden : tuple of int, optional
        Widths of a MADE variant's masked hidden layers, default the variant's.

    Returns
    -------
    ParityReport
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    spec = VARIANTS[variant]
    model_kwargs = dict(spec.model)
    if made_hidden is not None:
        if model_kwargs.get("decoder") != "made":
            raise ValueError(f"made_hidden sizes a MADE decoder; variant {variant!r} has none")
        model_kwargs["made_hidden"] = tuple(made_hidden)
    if data is None:
        grey, binary, labels = synthetic_mnist(seed=seed)
        images = grey if model_kwargs.get("likelihood") == "gaussian" else binary
    else:
        images, labels = data
    if model_kwargs.get("n_classes") and labels is None:
        raise ValueError("the conditional variant needs labels")
    np_dtype = np.dtype(dtype)
    images = np.asarray(images, dtype=np_dtype)
    if model_kwargs.get("decoder") == "made":
        # The MADE decoder models binary pixels only; given grey levels (--mnist), threshold them.
        images = binarize(images, "threshold")
    labels = None if labels is None else np.asarray(labels, dtype=np.int64)

    model = VAE(
        input_dim=images.shape[1],
        hidden_dims=hidden_dims,
        latent_dim=latent_dim,
        backend=get_backend("numpy", np_dtype.name),
        seed=seed,
        **model_kwargs,
    )
    twin = twin_of(model)
    opt_np = Adam(list(model.params.values()), list(model.grads.values()), lr=lr)
    opt_torch = twin_adam(twin, lr=lr)
    rng = np.random.default_rng(seed + 1000)
    order = batches(len(images), batch_size, rng)
    conditional = bool(model_kwargs.get("n_classes"))
    free_bits = model.hparams.free_bits

    rows: list[StepRow] = []
    one_step: dict[str, float] = {}
    seconds = {"numpy": 0.0, "torch": 0.0}
    for step in range(steps):
        idx = next(order)
        x, y = images[idx], (labels[idx] if conditional else None)
        eps = rng.standard_normal(model.noise_shape(len(idx))).astype(np_dtype)
        w = spec.kl_weight(step, steps)

        t0 = time.perf_counter()
        parts = model.loss(x, y, eps=eps, kl_weight=w)
        opt_np.step()
        t1 = time.perf_counter()
        theirs = twin_loss_backward(twin, x, y, eps, w)
        opt_torch.step()  # reads p.grad and leaves it as it was
        t2 = time.perf_counter()
        seconds["numpy"] += t1 - t0
        seconds["torch"] += t2 - t1

        diffs = _diffs(parts, theirs, model.grads, twin_grads(twin))
        if step == 0:
            one_step = diffs
        trained = param_diffs(model, twin)
        clamped = int((parts.kl_per_dim / parts.n < free_bits).sum()) if free_bits else 0
        row = StepRow(
            step=step + 1,
            kl_weight=w,
            loss=float(parts.loss),
            loss_diff=diffs["loss"],
            grad_diff=max(v for k, v in diffs.items() if k.startswith("grad/")),
            param_diff=max(trained.values()),
            clamped=clamped,
        )
        rows.append(row)
        if log is not None:
            log(row)

    failures = []
    if np_dtype == np.float64:
        for name, diff in one_step.items():
            if not diff <= ONE_STEP_BOUND:
                failures.append(f"first step: {name} differs by {diff:.3e} > {ONE_STEP_BOUND:g}")
        for name, diff in trained.items():
            if not diff <= TRAINED_BOUND:
                failures.append(
                    f"after {steps} steps: {name} differs by {diff:.3e} > {TRAINED_BOUND:g}"
                )
    return ParityReport(
        variant=variant,
        dtype=np_dtype.name,
        steps=steps,
        config=model.config(),
        one_step=one_step,
        trained=trained,
        rows=rows,
        seconds=seconds,
        failures=failures,
    )
