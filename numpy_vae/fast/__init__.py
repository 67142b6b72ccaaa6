"""The fast path: the specification's math with fused, in-place and allocation-free kernels.

Training uses this by default. Nothing here is new math: every kernel computes what a function of
the specification (``numpy_vae/*.py``) computes, and ``tests/test_fast_vs_reference.py`` holds it
there (values and gradients within a few units in the last place, stated in the test).

- :mod:`~numpy_vae.fast.buffers`: scratch arrays reused from one step to the next.
- :mod:`~numpy_vae.fast.parameters`: one flat vector for all parameters, one for all gradients.
- :mod:`~numpy_vae.fast.parallel`: elementwise work split over threads.
- :mod:`~numpy_vae.fast.likelihoods`: the Bernoulli value and gradient from one exp and a few logs.
- :mod:`~numpy_vae.fast.layers`: layers computing in place, and a Sequential that lends buffers.
- :mod:`~numpy_vae.fast.model`: :class:`FastVAE`, the model's training step on all of the above.
- :mod:`~numpy_vae.fast.kernels`: compiled loops (numba), each a formula as one pass.
- :mod:`~numpy_vae.fast.optim`: :class:`FastAdam`, Adam in one compiled pass, subnormal-safe.
"""

from numpy_vae.fast.model import FastVAE
from numpy_vae.fast.optim import FastAdam

__all__ = ["FastAdam", "FastVAE"]
