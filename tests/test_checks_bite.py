"""The checks must fail on wrong math: break one derivative at a time and watch them fire.

Each mutation doubles one hand-written derivative (or, for the ReLU, drops its mask); the
finite-difference check of the full model must then report a large error. The last test plants the
bug public VAEs have shipped (exp(logvar) used as the standard deviation, consistently in forward
and backward) and shows that only the distribution test, not the gradient check, sees it.
"""

import numpy as np
import pytest

import numpy_vae.likelihoods as likelihoods_module
import numpy_vae.model as model_module
from numpy_vae import VAE, get_backend
from numpy_vae.gradcheck import check_gradients
from numpy_vae.layers import Linear, ReLU
from numpy_vae.reparam import reparameterize

F64 = get_backend("numpy", "float64")


def model_errors():
    model = VAE(6, hidden_dims=(5,), latent_dim=3, backend=F64, seed=11)
    rng = np.random.default_rng(0)
    x, eps = rng.random((4, 6)), rng.standard_normal((4, 3))
    model.loss(x, eps=eps)
    return check_gradients(
        lambda: model.loss(x, eps=eps, grad=False).loss, model.params, model.grads
    )


def doubled(fn, index):
    def wrong(*args, **kwargs):
        out = list(fn(*args, **kwargs))
        out[index] = 2 * out[index]
        return tuple(out)

    return wrong


MUTATIONS = {
    "KL d_mu": (model_module, "kl_standard_normal", 1),
    "KL d_logvar": (model_module, "kl_standard_normal", 2),
    "reparameterization d_logvar": (model_module, "reparameterize_backward", 1),
    "reparameterization d_mu": (model_module, "reparameterize_backward", 0),
    "Bernoulli d_logits": (likelihoods_module, "bernoulli_nll", 1),
}


def test_unmutated_model_passes():
    assert max(model_errors().values()) < 1e-7


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_doubled_derivative_is_caught(monkeypatch, mutation):
    module, name, index = MUTATIONS[mutation]
    monkeypatch.setattr(module, name, doubled(getattr(module, name), index))
    assert max(model_errors().values()) > 1e-2


def test_wrong_linear_weight_gradient_is_caught(monkeypatch):
    original = Linear.backward

    def wrong(self, d_out):
        d_x = original(self, d_out)
        self.d_weight *= 2
        return d_x

    monkeypatch.setattr(Linear, "backward", wrong)
    errors = model_errors()
    assert all(errors[name] > 1e-2 for name in errors if name.endswith("weight"))


def test_relu_without_its_mask_is_caught(monkeypatch):
    monkeypatch.setattr(ReLU, "backward", lambda self, d_out: d_out)
    assert max(model_errors().values()) > 1e-2


def std_is_exp_logvar(mu, logvar, eps, xp):
    """The planted bug: sigma = exp(logvar), so the variance is exp(2 logvar)."""
    sigma = xp.exp(logvar)
    return mu + sigma * eps, (eps, sigma)


def std_is_exp_logvar_backward(d_z, cache):
    eps, sigma = cache
    return d_z, d_z * eps * sigma


def test_std_bug_passes_gradient_check_but_not_the_distribution_test(monkeypatch):
    monkeypatch.setattr(model_module, "reparameterize", std_is_exp_logvar)
    monkeypatch.setattr(model_module, "reparameterize_backward", std_is_exp_logvar_backward)
    # Forward and backward agree with each other, so finite differences are satisfied...
    assert max(model_errors().values()) < 1e-7
    # ...but the variance of z is exp(2 logvar), not exp(logvar): the distribution test fails.
    model = VAE(5, hidden_dims=(4,), latent_dim=2, backend=F64, seed=0)
    model.params["head.bias"][2:] += 1.0  # logvar well away from 0, where the bug is invisible
    x = np.random.default_rng(0).random((1, 5))
    mu, logvar = model.encode(x)
    n = 100_000
    model.loss(np.repeat(x, n, axis=0))
    z = model.decoder.layers[0]._x
    var = np.exp(logvar[0])
    assert np.any(np.abs(z.var(axis=0) - var) > 5 * var * np.sqrt(2 / n))
    # The correct sampler, by contrast, has the right variance (see test_model.py as well).
    z_ok, _ = reparameterize(mu, logvar, np.random.default_rng(1).standard_normal((n, 2)), np)
    np.testing.assert_array_less(np.abs(z_ok.var(axis=0) - var), 5 * var * np.sqrt(2 / n))
