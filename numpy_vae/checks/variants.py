"""The model variants that ``scripts/compare_torch.py`` holds against the PyTorch twin.

Kept apart from :mod:`numpy_vae.checks.torch_twin` (which needs PyTorch) so that the command line
can list them, and answer ``--help``, without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Variant:
    """A model configuration and KL-weight schedule that the parity harness runs.

    ``warmup_fraction`` > 0 ramps the KL weight linearly from 0 at the first step to ``beta``
    after that fraction of the steps (and holds it there).
    """

    description: str
    model: dict[str, Any] = field(default_factory=dict)
    warmup_fraction: float = 0.0

    def kl_weight(self, step: int, steps: int) -> float:
        """KL weight of 0-based ``step`` out of ``steps``."""
        beta = float(self.model.get("beta", 1.0))
        if self.warmup_fraction <= 0:
            return beta
        ramp = max(1, round(self.warmup_fraction * steps))
        return beta * min(1.0, step / ramp)


VARIANTS: dict[str, Variant] = {
    "default": Variant("ReLU, Bernoulli, beta 1 (the PyTorch example)"),
    "beta": Variant("beta-VAE, beta = 4", {"beta": 4.0}),
    "warmup": Variant("KL warm-up: weight 0 -> 1 over the first half", warmup_fraction=0.5),
    # From initialisation (784-400-20, synthetic data) the batch-mean KL per dimension is below
    # 0.01 nats, so at 0.5 nats the first steps clamp every dimension; within a few steps the
    # dimensions spread over about 0.03 to 3 nats, and from then on some are clamped and some are
    # not (StepRow.clamped counts them).
    "free_bits": Variant("free bits, lambda = 0.5 nats per dimension", {"free_bits": 0.5}),
    "conditional": Variant("conditional VAE, 10 classes", {"n_classes": 10}),
    "gaussian": Variant(
        "Gaussian likelihood, sigma = 0.5", {"likelihood": "gaussian", "gaussian_sigma": 0.5}
    ),
    # The multi-sample objectives (numpy_vae.bounds), K = 3 samples of z per example, eps of
    # shape (B, K, L). Their KL is sampled inside log w: beta 1, no warm-up, no free bits.
    "vae_k": Variant("k-sample VAE bound, K = 3: mean_k log w_k", {"objective": "vae", "k": 3}),
    "iwae": Variant(
        "IWAE bound, K = 3, plain reparameterized gradient: logsumexp_k log w_k - log K",
        {"objective": "iwae", "k": 3},
    ),
    "iwae_stl": Variant(
        "IWAE bound, K = 3, STL encoder gradient (q's density parameters held)",
        {"objective": "iwae", "k": 3, "estimator": "stl"},
    ),
    "iwae_dreg": Variant(
        "IWAE bound, K = 3, DReG encoder gradient (w~^2 and q's parameters held; the decoder "
        "takes the plain IWAE gradient)",
        {"objective": "iwae", "k": 3, "estimator": "dreg"},
    ),
    # The MADE decoder (numpy_vae.made): autoregressive over the pixels given z, teacher-forced
    # on binary images. Its widths are part of the variant (--hidden sets the encoder's).
    "made": Variant(
        "MADE decoder, one masked hidden layer of 500, z in every hidden layer", {"decoder": "made"}
    ),
    "made_deep": Variant(
        "MADE decoder, masked hidden layers (500, 500) and the direct pixels -> logits connection",
        {"decoder": "made", "made_hidden": (500, 500), "made_direct": True},
    ),
    "made_no_z": Variant(
        "MADE decoder without z (the autoregressive model alone; z only in the KL)",
        {"decoder": "made", "made_z": False},
    ),
    "made_iwae_dreg": Variant(
        "MADE decoder, IWAE bound, K = 3, DReG encoder gradient",
        {"decoder": "made", "objective": "iwae", "k": 3, "estimator": "dreg"},
    ),
    "made_conditional": Variant(
        "MADE decoder, conditional VAE, 10 classes (the one-hot label beside z in the context)",
        {"decoder": "made", "n_classes": 10},
    ),
}
