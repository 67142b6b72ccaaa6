"""A JAX twin of numpy-vae's default model, for the speed benchmark (``benchmark.py --jax``).

The same model (MLP encoder and decoder with ReLU units, the fused mu/logvar head, Bernoulli
likelihood, closed-form KL), its negative ELBO summed over the batch and Adam with PyTorch's
update, as one ``jax.jit``-compiled step: the fastest plain JAX a user would write, without extra
libraries. The images live on the device as float32 and each batch is gathered inside the
compiled step. Only the widths may differ from the default model; anything else is refused, so
that the benchmark never times a different model under the same name.

JAX is not a dependency of numpy-vae: :mod:`numpy_vae.experiments.benchmark` imports this module
only in the subprocess that times JAX, after checking that JAX is installed.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError as err:  # pragma: no cover - JAX is optional
    raise ImportError(
        "numpy_vae.experiments.jax_twin needs JAX, which is not a dependency of numpy-vae. "
        "Install the CPU build with `pip install jax`."
    ) from err

from numpy_vae.config import ModelConfig

# Adam's constants, PyTorch's defaults (and numpy-vae's); the learning rate is an argument.
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class JaxTraining:
    """Train numpy-vae's default model in JAX, one jitted step per batch.

    Parameters
    ----------
    input_dim : int
        D, the pixels per image.
    config : ModelConfig
        The default model's hyperparameters, but for ``hidden_dims`` and ``latent_dim``.
    data : jax array (N, D), float32
        The training images, scaled to [0, 1].
    batch_size : int
    lr : float
        Adam's learning rate.
    seed : int
        Seeds the weights (PyTorch's ``nn.Linear`` initialization: uniform in
        ``+-1/sqrt(fan_in)``) and the noise.
    """

    def __init__(
        self,
        input_dim: int,
        config: ModelConfig,
        data: Any,
        batch_size: int,
        lr: float,
        seed: int = 0,
    ) -> None:
        supported = replace(
            ModelConfig(), hidden_dims=config.hidden_dims, latent_dim=config.latent_dim
        )
        if config != supported:
            raise ValueError(
                "the JAX twin has only the default model (ReLU, Bernoulli, ELBO, MLP decoder); "
                f"got {config}"
            )
        self.data, self.batch_size = data, batch_size
        hidden_dims, latent = config.hidden_dims, config.latent_dim
        rng = np.random.default_rng(seed)

        def linear(fan_in: int, fan_out: int) -> dict[str, Any]:
            bound = 1 / np.sqrt(fan_in)
            w = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)
            b = rng.uniform(-bound, bound, fan_out).astype(np.float32)
            return {"w": jnp.asarray(w), "b": jnp.asarray(b)}

        enc = (input_dim, *hidden_dims)
        dec = (latent, *reversed(hidden_dims))
        self.params = {
            "encoder": [linear(a, b) for a, b in zip(enc[:-1], enc[1:], strict=True)],
            "head": linear(hidden_dims[-1], 2 * latent),
            "decoder": [linear(a, b) for a, b in zip(dec[:-1], dec[1:], strict=True)]
            + [linear(hidden_dims[0], input_dim)],
        }
        zeros = jax.tree_util.tree_map(jnp.zeros_like, self.params)
        self.m, self.v, self.t = zeros, zeros, 0
        (b1, b2), eps = BETAS, ADAM_EPS

        def loss(params: Any, x: Any, noise: Any) -> Any:
            """Negative ELBO summed over the batch: Bernoulli NLL from the logits
            (``softplus(l) - x l``) plus the closed-form KL."""
            h = x
            for layer in params["encoder"]:
                h = jax.nn.relu(h @ layer["w"].T + layer["b"])
            stats = h @ params["head"]["w"].T + params["head"]["b"]
            mu, logvar = stats[:, :latent], stats[:, latent:]
            h = mu + jnp.exp(0.5 * logvar) * noise
            for layer in params["decoder"][:-1]:
                h = jax.nn.relu(h @ layer["w"].T + layer["b"])
            logits = h @ params["decoder"][-1]["w"].T + params["decoder"][-1]["b"]
            recon = jnp.sum(jnp.logaddexp(0, logits) - x * logits)
            return recon + 0.5 * jnp.sum(mu * mu + jnp.exp(logvar) - logvar - 1)

        def step(params: Any, m: Any, v: Any, t: Any, data: Any, index: Any, key: Any) -> Any:
            x = data[index]
            noise = jax.random.normal(key, (x.shape[0], latent), dtype=x.dtype)
            grads = jax.grad(loss)(params, x, noise)
            m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
            v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
            # PyTorch's order of operations: lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
            scale = lr / (1 - b1**t)
            root = jnp.sqrt(1 - b2**t)
            params = jax.tree_util.tree_map(
                lambda p, m, v: p - scale * m / (jnp.sqrt(v) / root + eps), params, m, v
            )
            return params, m, v

        self._step = jax.jit(step)
        self._key = jax.random.PRNGKey(seed)

    def epoch(self) -> float:
        """Train one epoch; return the seconds (the last update waited for)."""
        n, size = self.data.shape[0], self.batch_size
        order = np.random.default_rng(self.t).permutation(n)
        start = time.perf_counter()
        params, m, v = self.params, self.m, self.v
        for begin in range(0, n, size):
            self.t += 1
            self._key, key = jax.random.split(self._key)
            index = jnp.asarray(order[begin : begin + size])
            params, m, v = self._step(params, m, v, self.t, self.data, index, key)
        jax.block_until_ready(params)
        self.params, self.m, self.v = params, m, v
        return time.perf_counter() - start
