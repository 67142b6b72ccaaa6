"""The fast path's bookkeeping: reused buffers, in-place activations, float32 throughout.

(``tests/test_fast_vs_reference.py`` holds its numbers to the specification's.)

The gradient checks elsewhere prove the math; these tests prove that the memory reuse behind it
never changes a number and never hands a caller an array that a later call overwrites.
"""

import numpy as np
import pytest

from numpy_vae import get_backend
from numpy_vae.fast import FastVAE as VAE
from numpy_vae.fast.buffers import Buffers
from numpy_vae.fast.layers import FastLinear, FastSequential
from numpy_vae.layers import LeakyReLU, Linear, ReLU, Sequential, Sigmoid, Tanh

F64 = get_backend("numpy", "float64")


def batch(n, seed, dim=784):
    rng = np.random.default_rng(seed)
    return rng.random((n, dim), dtype=np.float32), rng.standard_normal((n, 20), dtype=np.float32)


def fresh_result(model, x, eps):
    """Loss and gradients from a new model with the same parameters: buffers never used before."""
    twin = VAE(**model.config())
    twin.flat.data[...] = model.flat.data
    parts = twin.loss(x, eps=eps)
    return float(parts.loss), twin.flat.grad.copy()


def test_buffers_reused_across_batch_sizes_give_the_same_numbers():
    """An epoch ends with a smaller batch and evaluation uses larger ones; every size must get
    exactly what a model that never saw another size computes."""
    model = VAE(seed=3)
    for i, n in enumerate([128, 96, 128, 1000, 7, 128]):
        x, eps = batch(n, seed=i)
        parts = model.loss(x, eps=eps)
        loss, grad = fresh_result(model, x, eps)
        assert float(parts.loss) == loss
        np.testing.assert_array_equal(model.flat.grad, grad)


def test_results_returned_to_callers_are_not_overwritten_by_later_calls():
    model = VAE(seed=0)
    x1, eps1 = batch(64, seed=1)
    x2, eps2 = batch(64, seed=2)
    parts = model.loss(x1, eps=eps1)
    names = ("loss", "recon", "kl", "kl_per_dim")
    kept = {k: np.array(getattr(parts, k), copy=True) for k in names}
    mu, logvar = model.encode(x1)
    mu_copy, logvar_copy = mu.copy(), logvar.copy()
    means = model.decode(mu)
    means_copy = means.copy()
    model.loss(x2, eps=eps2)
    model.encode(x2)
    model.decode(mu_copy + 1)
    for k, value in kept.items():
        np.testing.assert_array_equal(getattr(parts, k), value)
    np.testing.assert_array_equal(mu, mu_copy)
    np.testing.assert_array_equal(logvar, logvar_copy)
    np.testing.assert_array_equal(means, means_copy)


def test_the_callers_batch_is_never_written():
    model = VAE(hidden_dims=(32,), seed=0)
    x, eps = batch(16, seed=0)
    x_copy, eps_copy = x.copy(), eps.copy()
    model.loss(x, eps=eps, validate=False)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(eps, eps_copy)


@pytest.mark.parametrize(
    "make",
    [
        lambda b, r: [Linear(5, 4, b, r), ReLU(b), Linear(4, 3, b, r), Tanh(b)],
        lambda b, r: [Linear(5, 4, b, r), Tanh(b), ReLU(b), Linear(4, 3, b, r), Sigmoid(b)],
        lambda b, r: [ReLU(b), Linear(5, 4, b, r), LeakyReLU(b), Sigmoid(b), LeakyReLU(b)],
        # Activations after Tanh and Sigmoid that change their output where it matters.
        lambda b, r: [
            Linear(5, 4, b, r),
            Tanh(b),
            LeakyReLU(b),
            Linear(4, 3, b, r),
            Sigmoid(b),
            Tanh(b),
        ],
    ],
)
def test_sequential_with_buffers_computes_exactly_what_it_computes_without(make):
    """In-place activations must not corrupt what a layer kept for its backward (Tanh and
    Sigmoid keep their output) nor touch the caller's input or upstream gradient."""
    rng = np.random.default_rng(0)
    net = Sequential(make(F64, rng))
    fast = FastSequential(net)
    x = rng.standard_normal((6, 5))
    d_out = rng.standard_normal((6, net.forward(x).shape[1]))
    x_copy, d_copy = x.copy(), d_out.copy()
    y_plain = net.forward(x)
    d_plain = net.backward(d_out)
    grads_plain = {k: v.copy() for k, v in net.gradients().items()}
    buffers = Buffers(np)
    for _ in range(2):  # the second round reuses the buffers
        y = fast.forward(x, buffers)
        np.testing.assert_array_equal(y, y_plain)
        d_x = fast.backward(d_out, buffers)
        np.testing.assert_array_equal(d_x, d_plain)
        for name, g in net.gradients().items():
            np.testing.assert_array_equal(g, grads_plain[name])
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(d_out, d_copy)


def test_buffers_grow_and_hand_out_row_views():
    buffers = Buffers(np)
    a = buffers.get("a", (4, 3), np.float32)
    b = buffers.get("a", (2, 3), np.float32)
    assert b.shape == (2, 3) and np.shares_memory(a, b) and b.flags.c_contiguous
    c = buffers.get("a", (8, 3), np.float32)  # more rows: a new, larger array
    assert c.shape == (8, 3) and not np.shares_memory(a, c)
    assert buffers.get("a", (8, 3), np.float64).dtype == np.float64
    assert buffers.nbytes() == 8 * 3 * 8
    buffers.clear()
    assert buffers.nbytes() == 0


def test_float32_end_to_end():
    """No float64 array appears anywhere in a float32 training step (a silent upcast would
    double the memory traffic of every pass that touched it)."""
    model = VAE(hidden_dims=(32,), seed=0)
    x, eps = batch(16, seed=0)
    parts = model.loss(x, eps=eps, validate=False)
    for value in (parts.loss, parts.recon, parts.kl, parts.kl_per_dim):
        assert value.dtype == np.float32
    layers = [*model.fast_encoder.layers, model.fast_head, *model.fast_decoder.layers]
    for layer in [layer for layer in layers if isinstance(layer, FastLinear)]:
        assert layer.input.dtype == np.float32
    for buffers in model.buffers.values():
        for array in buffers._arrays.values():
            assert array.dtype in (np.float32, np.bool_)
    assert model.flat.grad.dtype == np.float32


@pytest.mark.parametrize("mode", ["none", "threshold"])
def test_training_batches_are_scaled_exactly_like_scale_images(mode):
    from numpy_vae.training.data import binarize, scale_images
    from numpy_vae.training.trainer import Dataset, TrainConfig, Trainer

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 784), dtype=np.uint8)
    labels = np.zeros(300, dtype=np.int64)
    data = Dataset(images, labels, images[:50], labels[:50])
    trainer = Trainer(TrainConfig(batch_size=128, hidden_dims=(8,), binarize=mode), data)
    for index in (rng.permutation(300)[:128], rng.permutation(300)[:44], np.arange(128)):
        x = trainer.batch_inputs(index, None)
        expected = binarize(scale_images(images[index]), mode)
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, expected)


def test_linear_skips_input_gradient_when_asked():
    layer = Linear(4, 3, F64, np.random.default_rng(0))
    fast = FastLinear(layer)
    fast.forward(np.ones((2, 4)))
    assert fast.backward(np.ones((2, 3)), need_input_grad=False) is None
    np.testing.assert_allclose(layer.d_weight, np.full((3, 4), 2.0))


@pytest.mark.parametrize("planted", [False, True])
@pytest.mark.parametrize(
    "config",
    [
        {},  # the default model
        {
            "hidden_dims": (200, 200),
            "latent_dim": 50,
            "activation": "tanh",
            "objective": "iwae",
            "k": 50,
        },  # fmt: skip
    ],
)
@pytest.mark.parametrize("n", [7, 20, 128])
def test_the_transposed_first_weight_gives_the_same_bits(monkeypatch, config, planted, n):
    """The fast model stores its first weight transposed for the BLAS's speed only
    (:meth:`~numpy_vae.fast.FastVAE.transposed_weights`): a model storing it as is computes
    the same loss and gradients, bit for bit, at 7 rows or more. Planted: a BLAS that rounds
    the transposed layout's forward product differently, by one ulp in one entry."""
    model = VAE(**config, seed=0)
    stored = [name for name, p in model.params.items() if p.ndim == 2 and p.flags.f_contiguous]
    assert stored == model.transposed_weights()
    if not stored:  # this machine's BLAS rounds the two layouts differently: nothing to test
        pytest.skip("the BLAS here gives other bits for a transposed weight; none is stored so")
    assert stored == ["encoder.0.weight"]
    x, _ = batch(n, seed=1)
    eps = np.random.default_rng(2).standard_normal(model.noise_shape(n), dtype=np.float32)
    if planted:
        forward = FastLinear.forward

        def rounding_otherwise(self, x, out=None, bias=True):
            y = forward(self, x, out=out, bias=bias)
            if not self.layer.weight.flags.c_contiguous:
                y[0, 0] = np.nextafter(y[0, 0], np.inf)
            return y

        monkeypatch.setattr(FastLinear, "forward", rounding_otherwise)
    parts = model.loss(x, eps=eps)
    grads = {name: g.copy() for name, g in model.grads.items()}

    monkeypatch.setattr(VAE, "transposed_weights", lambda self: [])
    plain = VAE(**config, seed=0)
    assert all(p.flags.c_contiguous for p in plain.params.values())
    plain.load_state_dict(model.state_dict())
    plain_parts = plain.loss(x, eps=eps)
    same = float(plain_parts.loss) == float(parts.loss) and all(
        np.array_equal(g, plain.grads[name]) for name, g in grads.items()
    )
    assert same != planted


def test_no_weight_is_stored_transposed_where_the_blas_rounds_the_layouts_apart(monkeypatch):
    """The probe compares the first layer's two products from both layouts; planted: a
    transposed copy one ulp off in one entry (a BLAS that rounded that layout differently
    would look the same), which it catches. A model whose probe says no stores nothing
    transposed and still computes the specification's gradients."""
    import numpy_vae.fast.model as fast_model
    import numpy_vae.fast.parameters as parameters

    probe = parameters.same_bits_transposed.__wrapped__

    def one_ulp_off(a):
        a = np.array(a, order="F")
        a[0, 0] = np.nextafter(a[0, 0], np.inf)
        return a

    if probe(400, 784, "float32"):  # (on a BLAS that says no here, there is nothing to plant)
        monkeypatch.setattr(parameters.numpy, "asfortranarray", one_ulp_off)
        assert not probe(400, 784, "float32")
        monkeypatch.undo()

    monkeypatch.setattr(fast_model, "same_bits_transposed", lambda *shape: False)
    model = VAE(seed=0)
    assert model.transposed_weights() == []
    assert all(p.flags.c_contiguous for p in model.params.values())
