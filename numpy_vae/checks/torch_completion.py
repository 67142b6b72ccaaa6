"""PyTorch twins of the completion models (:mod:`numpy_vae.completion`, :mod:`numpy_vae.gsnn`),
and their parity harness.

Written the plain way, as :mod:`numpy_vae.checks.torch_twin` writes the VAE: each network an
``nn.Sequential`` of ``nn.Linear`` layers and activations, the Bernoulli negative log-likelihood
of the hidden pixels ``F.binary_cross_entropy_with_logits(reduction="sum")``, the KL between the
two diagonal Gaussians in closed form (:func:`gaussian_kl_elements`), ``loss.backward()`` and
``torch.optim.Adam``. A numpy-vae model is read for its sizes, activation, dtype and initial
weights only; the ``state_dict`` keys of a twin are numpy-vae's parameter names
(``prior.0.weight``, ..., ``generation.2.bias``; ``net.0.weight``, ... for the baseline), so the
weights copy one-to-one and every comparison is by name. The GSNN's twin has the prior and
generation networks only; the hybrid's is the CVAE's twin with the loss
``alpha * (CVAE's) + (1 - alpha) * (GSNN's)``, both draws from the one ``eps``.

::

    CompletionCVAE  ─ sizes, weights ─▶  TorchCompletionCVAE
        │                                       │
        │      same visible, hidden, eps        │
        ▼                                       ▼
    hand-written gradients      ≟      autograd gradients        (float64: <= 1e-12)
    numpy_vae.Adam              ≟      torch.optim.Adam          (100 steps: <= 1e-10)

``python -m numpy_vae.checks.torch_completion`` prints the parity figures of every model.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as err:  # pragma: no cover - as numpy_vae.checks.torch_twin
    raise ImportError(
        "numpy_vae.checks.torch_completion needs PyTorch, an optional dependency of numpy-vae: "
        "`pip install torch==2.13.0` (CPU)."
    ) from err

from numpy_vae.backend import get_backend
from numpy_vae.checks.torch_twin import (
    ONE_STEP_BOUND,
    TORCH_ACTIVATIONS,
    TORCH_DTYPES,
    TRAINED_BOUND,
    ParityReport,
    StepRow,
    batches,
    scalar_diff,
    synthetic_mnist,
    to_tensor,
)
from numpy_vae.completion import CompletionBaseline, CompletionCVAE, CompletionModel
from numpy_vae.gradcheck import relative_error
from numpy_vae.gsnn import CompletionGSNN, CompletionHybrid
from numpy_vae.layers import ACTIVATIONS
from numpy_vae.optim import Adam
from numpy_vae.quadrants import quadrant_split

#: The models, by the name the harness and the golden files give them.
MODELS = {
    "cvae": CompletionCVAE,
    "baseline": CompletionBaseline,
    "gsnn": CompletionGSNN,
    "hybrid": CompletionHybrid,
}


def gaussian_kl_elements(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """``KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p)))`` of every coordinate, (B, L):
    ``1/2 (logvar_p - logvar_q + (var_q + (mu_q - mu_p)^2) / var_p - 1)``."""
    var_q, var_p = logvar_q.exp(), logvar_p.exp()
    return 0.5 * (logvar_p - logvar_q + (var_q + (mu_q - mu_p).pow(2)) / var_p - 1)


def sequential(widths: tuple[int, ...], out: int, activation: str, dtype: torch.dtype):
    """``nn.Sequential``: Linear and activation through ``widths``, then a Linear to ``out``
    (so the Linear layers sit at even indices, as numpy-vae names them). ``leaky_relu`` is
    ``nn.LeakyReLU()`` at its default slope 0.01, the completion networks' slope."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out, dtype=dtype), TORCH_ACTIVATIONS[activation]()]
    layers.append(nn.Linear(widths[-1], out, dtype=dtype))
    return nn.Sequential(*layers)


class TorchCompletionBaseline(nn.Module):
    """:class:`numpy_vae.completion.CompletionBaseline` in PyTorch: logits of the hidden pixels
    from the visible ones; the loss is their Bernoulli negative log-likelihood, summed."""

    latent_dim = 0

    def __init__(
        self,
        visible_dim: int,
        hidden_dim: int,
        widths: tuple[int, ...],
        activation: str = "relu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        self.net = sequential((visible_dim, *widths), hidden_dim, activation, dtype)

    @classmethod
    def from_config(cls, config: dict[str, Any], dtype: torch.dtype) -> nn.Module:
        """From constructor arguments (:func:`build_twin`)."""
        return cls(*sizes_of(config), config.get("activation", "relu"), dtype)

    def loss(self, visible: torch.Tensor, hidden: torch.Tensor, eps: Any = None) -> dict:
        """``loss`` = ``recon`` (0-d), ``kl`` (B, 0): no latent variable, no ``eps``."""
        recon = F.binary_cross_entropy_with_logits(self.net(visible), hidden, reduction="sum")
        return {"loss": recon, "recon": recon, "kl": visible.new_zeros((len(visible), 0))}


class LatentTwin(nn.Module):
    """What the twins with a latent z share: the prior network ``p(z | visible)``, the
    generation network ``p(hidden | visible, z)``, which reads ``[visible | z]``, and their
    construction from constructor arguments."""

    def __init__(
        self,
        visible_dim: int,
        hidden_dim: int,
        widths: tuple[int, ...],
        latent_dim: int,
        activation: str = "relu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        self.visible_dim, self.hidden_dim, self.widths = visible_dim, hidden_dim, widths
        self.latent_dim, self.activation, self.dtype = latent_dim, activation, dtype
        self.prior = sequential((visible_dim, *widths), 2 * latent_dim, activation, dtype)
        self.generation = sequential(
            (visible_dim + latent_dim, *widths), hidden_dim, activation, dtype
        )

    @classmethod
    def from_config(cls, config: dict[str, Any], dtype: torch.dtype) -> nn.Module:
        """From constructor arguments (:func:`build_twin`)."""
        return cls(*sizes_of(config), config["latent_dim"], config.get("activation", "relu"), dtype)


class TorchCompletionCVAE(LatentTwin):
    """:class:`numpy_vae.completion.CompletionCVAE` in PyTorch: the prior and generation networks
    (:class:`LatentTwin`) and the recognition network ``q(z | visible, hidden)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """:class:`LatentTwin`'s arguments."""
        super().__init__(*args, **kwargs)
        self.recognition = sequential(
            (self.visible_dim + self.hidden_dim, *self.widths),
            2 * self.latent_dim, self.activation, self.dtype,
        )  # fmt: skip

    def loss(self, visible: torch.Tensor, hidden: torch.Tensor, eps: torch.Tensor) -> dict:
        """The negative ELBO summed over the batch, ``recon + sum KL``, at
        ``z = mu_q + exp(logvar_q / 2) eps``; ``kl`` is the elementwise KL (B, L)."""
        mu_p, logvar_p = self.prior(visible).split(self.latent_dim, dim=1)
        stats_q = self.recognition(torch.cat([visible, hidden], dim=1))
        mu_q, logvar_q = stats_q.split(self.latent_dim, dim=1)
        z = mu_q + torch.exp(0.5 * logvar_q) * eps
        logits = self.generation(torch.cat([visible, z], dim=1))
        recon = F.binary_cross_entropy_with_logits(logits, hidden, reduction="sum")
        kl = gaussian_kl_elements(mu_q, logvar_q, mu_p, logvar_p)
        return {"loss": recon + kl.sum(), "recon": recon, "kl": kl}


def gsnn_nll(model: nn.Module, visible: torch.Tensor, hidden: torch.Tensor, eps: torch.Tensor):
    """``-log p(hidden | visible, z)`` summed over the batch at the prior's draw
    ``z = mu_p + exp(logvar_p / 2) eps``."""
    mu_p, logvar_p = model.prior(visible).split(model.latent_dim, dim=1)
    z = mu_p + torch.exp(0.5 * logvar_p) * eps
    logits = model.generation(torch.cat([visible, z], dim=1))
    return F.binary_cross_entropy_with_logits(logits, hidden, reduction="sum")


class TorchCompletionGSNN(LatentTwin):
    """:class:`numpy_vae.gsnn.CompletionGSNN` in PyTorch: the prior network and the generation
    network (:class:`LatentTwin`); the loss is :func:`gsnn_nll`."""

    def loss(self, visible: torch.Tensor, hidden: torch.Tensor, eps: torch.Tensor) -> dict:
        """``loss`` = ``recon`` (0-d), ``kl`` (B, 0): there is no KL term."""
        recon = gsnn_nll(self, visible, hidden, eps)
        return {"loss": recon, "recon": recon, "kl": visible.new_zeros((len(visible), 0))}


class TorchCompletionHybrid(TorchCompletionCVAE):
    """:class:`numpy_vae.gsnn.CompletionHybrid` in PyTorch: the CVAE's twin, whose loss is
    ``alpha`` times the negative ELBO plus ``1 - alpha`` times :func:`gsnn_nll` at the same
    ``eps``; ``recon`` and ``kl`` are the ELBO's."""

    def __init__(self, *args: Any, alpha: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alpha = alpha

    @classmethod
    def from_config(cls, config: dict[str, Any], dtype: torch.dtype) -> nn.Module:
        """From constructor arguments, ``alpha`` among them."""
        twin = super().from_config(config, dtype)
        twin.alpha = config["alpha"]
        return twin

    def loss(self, visible: torch.Tensor, hidden: torch.Tensor, eps: torch.Tensor) -> dict:
        elbo = super().loss(visible, hidden, eps)
        gsnn = gsnn_nll(self, visible, hidden, eps)
        return {**elbo, "loss": self.alpha * elbo["loss"] + (1 - self.alpha) * gsnn}


#: The twin of each model of :data:`MODELS`.
TWINS = {
    "cvae": TorchCompletionCVAE,
    "baseline": TorchCompletionBaseline,
    "gsnn": TorchCompletionGSNN,
    "hybrid": TorchCompletionHybrid,
}


def sizes_of(config: dict[str, Any]) -> tuple[int, int, tuple[int, ...]]:
    """``visible_dim``, ``hidden_dim`` and ``widths`` of constructor arguments."""
    return config["visible_dim"], config["hidden_dim"], tuple(config["widths"])


def activation_of(model: CompletionModel) -> str:
    """The activation name of a numpy-vae completion model, read off its first network's layers."""
    first = next(iter(model.networks().values()))
    kinds = {
        name for layer in first.layers for name, cls in ACTIVATIONS.items() if type(layer) is cls
    }
    (name,) = kinds
    return name


def build_twin(kind: str, config: dict[str, Any], dtype: torch.dtype = torch.float64) -> nn.Module:
    """A twin of ``kind`` (a key of :data:`TWINS`) from constructor arguments ``config``:
    ``visible_dim``, ``hidden_dim``, ``widths``, ``activation`` and, with a latent z,
    ``latent_dim`` and the hybrid's ``alpha`` (a golden file's ``config["model"]``)."""
    return TWINS[kind].from_config(config, dtype)


def completion_twin_of(model: CompletionModel) -> nn.Module:
    """The twin of a numpy-vae completion model: its sizes, activation, dtype and (copied)
    weights, loaded by name with ``strict=True``."""
    kind = next(name for name, cls in MODELS.items() if type(model) is cls)
    config = {
        "visible_dim": model.visible_dim,
        "hidden_dim": model.hidden_dim,
        "widths": model.widths,
        "latent_dim": model.latent_dim,
        "activation": activation_of(model),
        "alpha": getattr(model, "alpha", None),
    }
    twin = build_twin(kind, config, TORCH_DTYPES[np.dtype(model.dtype).name])
    load_params(twin, model.params)
    return twin


def load_params(twin: nn.Module, params: dict[str, Any]) -> None:
    """Copy named arrays into the twin (``strict``: the names match one-to-one)."""
    dtype = next(twin.parameters()).dtype
    state = {name: torch.tensor(np.asarray(a), dtype=dtype) for name, a in params.items()}
    twin.load_state_dict(state, strict=True)


def twin_loss_backward(
    twin: nn.Module, visible: Any, hidden: Any, eps: Any = None, grad: bool = True
) -> dict[str, Any]:
    """One loss of the twin on NumPy inputs and, with ``grad``, ``loss.backward()`` (gradients
    zeroed first). Returns ``loss``, ``recon``, ``kl`` (floats) and ``kl_per_dim`` (L,)."""
    dtype = next(twin.parameters()).dtype
    twin.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(grad):
        parts = twin.loss(
            to_tensor(visible, dtype), to_tensor(hidden, dtype), to_tensor(eps, dtype)
        )
        if grad:
            parts["loss"].backward()
    with torch.no_grad():
        return {
            "loss": parts["loss"].item(),
            "recon": parts["recon"].item(),
            "kl": parts["kl"].sum().item(),
            "kl_per_dim": parts["kl"].sum(dim=0).numpy().copy(),
        }


def twin_params(twin: nn.Module) -> dict[str, np.ndarray]:
    return {name: p.detach().numpy().copy() for name, p in twin.named_parameters()}


def twin_grads(twin: nn.Module) -> dict[str, np.ndarray]:
    return {name: p.grad.detach().numpy().copy() for name, p in twin.named_parameters()}


def twin_adam(
    twin: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> torch.optim.Adam:
    """``torch.optim.Adam`` over the twin's parameters (single-tensor, as on CPU by default)."""
    return torch.optim.Adam(twin.parameters(), lr=lr, betas=betas, eps=eps, foreach=False)


def diffs_of(
    parts: Any, theirs: dict[str, Any], grads: dict[str, Any], their_grads: dict[str, Any]
) -> dict[str, float]:
    """Relative differences of ``loss``, ``recon``, ``kl``, ``kl_per_dim`` and every gradient."""
    diffs = {
        key: scalar_diff(float(getattr(parts, key)), theirs[key]) for key in ("loss", "recon", "kl")
    }
    diffs["kl_per_dim"] = (
        relative_error(parts.kl_per_dim, theirs["kl_per_dim"]) if parts.kl_per_dim.size else 0.0
    )
    for name, g in grads.items():
        diffs[f"grad/{name}"] = relative_error(g, their_grads[name])
    return diffs


def compare_once(
    model: Any, twin: nn.Module, visible: Any, hidden: Any, eps: Any = None
) -> dict[str, float]:
    """One loss and backward on both sides from their current weights: the relative
    differences of the loss, its parts and every gradient (``grad/<name>``)."""
    parts = model.loss(visible, hidden, eps=eps)
    theirs = twin_loss_backward(twin, visible, hidden, eps)
    return diffs_of(parts, theirs, model.grads, twin_grads(twin))


def completion_data(n: int = 2048, n_given: int = 2, seed: int = 0) -> tuple[np.ndarray, ...]:
    """``visible`` and ``hidden`` quadrants (float64) of :func:`synthetic_mnist`'s binary
    images."""
    return quadrant_split(synthetic_mnist(n=n, seed=seed)[1], n_given)


def compare_training(
    kind: str = "cvae",
    steps: int = 100,
    widths: tuple[int, ...] = (64,),
    latent_dim: int = 8,
    batch_size: int = 16,
    n_given: int = 2,
    activation: str = "relu",
    seed: int = 0,
    lr: float = 1e-3,
) -> ParityReport:
    """Train a completion model (``kind``, a key of :data:`MODELS`) and its twin side by side
    in float64 on identical batches of MNIST-shaped quadrants and identical ``eps`` (drawn on
    the NumPy side), from numpy-vae's initial weights. The bounds are the VAE twin's:
    :data:`ONE_STEP_BOUND` (the loss, its parts and every gradient of the first step) and
    :data:`TRAINED_BOUND` (every parameter after ``steps`` Adam steps)."""
    visible, hidden = completion_data(n_given=n_given, seed=seed)
    f64 = get_backend("numpy", "float64")
    sizes = {
        "visible_dim": visible.shape[1],
        "hidden_dim": hidden.shape[1],
        "widths": widths,
        "activation": activation,
    }
    if kind != "baseline":
        sizes["latent_dim"] = latent_dim
    model = MODELS[kind](**sizes, backend=f64, seed=seed)
    twin = completion_twin_of(model)
    opt_np = Adam(list(model.params.values()), list(model.grads.values()), lr=lr)
    opt_torch = twin_adam(twin, lr=lr)
    rng = np.random.default_rng(seed + 1000)
    order = batches(len(visible), batch_size, rng)
    rows, one_step, trained = [], {}, {}
    seconds = {"numpy": 0.0, "torch": 0.0}
    for step in range(steps):
        idx = next(order)
        eps = rng.standard_normal((batch_size, latent_dim)) if model.latent_dim else None
        t0 = time.perf_counter()
        parts = model.loss(visible[idx], hidden[idx], eps=eps)
        opt_np.step()
        t1 = time.perf_counter()
        theirs = twin_loss_backward(twin, visible[idx], hidden[idx], eps)
        opt_torch.step()
        t2 = time.perf_counter()
        seconds["numpy"] += t1 - t0
        seconds["torch"] += t2 - t1
        diffs = diffs_of(parts, theirs, model.grads, twin_grads(twin))
        one_step = one_step or diffs
        theirs_p = twin_params(twin)
        trained = {name: relative_error(p, theirs_p[name]) for name, p in model.params.items()}
        rows.append(
            StepRow(
                step + 1,
                1.0,
                float(parts.loss),
                diffs["loss"],
                max(v for k, v in diffs.items() if k.startswith("grad/")),
                max(trained.values()),
            )
        )
    failures = [
        f"first step: {k} differs by {v:.3e} > {ONE_STEP_BOUND:g}"
        for k, v in one_step.items()
        if not v <= ONE_STEP_BOUND
    ]
    failures += [
        f"after {steps} steps: {k} differs by {v:.3e} > {TRAINED_BOUND:g}"
        for k, v in trained.items()
        if not v <= TRAINED_BOUND
    ]
    config = {**sizes, "kind": kind, "n_given": n_given, "batch_size": batch_size, "lr": lr}
    return ParityReport(
        f"completion_{kind}", "float64", steps, config, one_step, trained, rows, seconds, failures
    )


def main() -> int:
    """Print the float64 parity figures of every model (torch at one thread)."""
    torch.set_num_threads(1)
    ok = True
    for kind in MODELS:
        report = compare_training(kind)
        ok &= report.ok
        print(
            f"{kind}: one step loss {report.max_one_step_loss:.1e}, gradients "
            f"{report.max_one_step_grad:.1e}; after {report.steps} Adam steps parameters "
            f"{report.max_trained_param:.1e}; loss {report.rows[0].loss:.1f} -> "
            f"{report.rows[-1].loss:.1f}; {'ok' if report.ok else report.failures}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
