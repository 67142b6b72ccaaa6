"""A gradient-check report of a whole model: one row per parameter array, pass or fail.

This is what ``scripts/gradcheck.py`` prints, and what a student runs after changing a
derivative. The model is built in float64, the reparameterization noise ``eps`` is drawn once and
passed in, so the loss is a deterministic function of the parameters, and every checked entry's
analytic gradient is compared with the five-point central difference of
:func:`numpy_vae.gradcheck.numerical_gradient`. An array's error is the relative error of
:func:`numpy_vae.gradcheck.relative_error` over its checked entries.

Two things make a whole-model check harder than a layer check, and both are handled in the open:

**Kinks.** A ReLU (or LeakyReLU) is not differentiable at 0, and free bits' ``max(lambda, KL_j)``
is not differentiable at ``KL_j = lambda``. If moving one parameter by up to ``2h`` (the stencil's
reach) moves some pre-activation across 0, the difference quotient mixes two slopes and is not
the derivative at the point. With a 400-unit layer such crossings do happen now and then, and no
choice of data rules them out for every entry. So every evaluation of the loss records which
side of each kink it is on (the sign of every ReLU input, and which latent dimensions free bits
clamps), and an entry whose stencil lands on a different side than the unperturbed point is not
compared; the report counts these entries ("kink") instead of hiding them.

**Rounding.** The loss is a sum over the batch and the pixels, rounded to about one unit in the
last place; the five-point quotient turns that into an absolute error of about
``1.5 * spacing(loss) / h`` (:func:`rounding_floor`). A relative bound ``tol`` therefore means
something only for arrays whose gradient is well above ``floor / tol``; rows below
``2 * floor / tol`` are flagged in the report (the model tests avoid them with ``assume``), so
that a FAIL caused by rounding is not mistaken for a wrong derivative.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy

from numpy_vae.backend import get_backend
from numpy_vae.config import ModelConfig
from numpy_vae.gradcheck import numerical_gradient, relative_error
from numpy_vae.layers import LeakyReLU, ReLU, Sequential
from numpy_vae.model import VAE

Array = Any
KINKED = (ReLU, LeakyReLU)
DEFAULT_TOL = 1e-7
DEFAULT_STEP = 1e-4


@dataclass
class Row:
    """The check of one parameter array.

    Attributes
    ----------
    name : parameter name, e.g. ``encoder.0.weight``
    shape : its shape
    error : largest relative error over the compared entries (0 if none were compared)
    checked : entries compared
    kink : entries not compared because their stencil crossed a kink
    scale : max |analytic gradient| over the compared entries
    passed : ``error <= tol`` and at least one entry compared
    resolvable : whether ``scale`` is far enough above the rounding floor for ``tol`` to be
        meaningful (see the module docstring)
    """

    name: str
    shape: tuple[int, ...]
    error: float
    checked: int
    kink: int
    scale: float
    passed: bool
    resolvable: bool


@dataclass
class Report:
    """A whole-model gradient check: the rows and how they were obtained."""

    rows: list[Row]
    tol: float
    h: float
    loss: float
    floor: float
    seconds: float
    model: dict[str, Any]
    inputs: str
    full: bool
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every row passed (and at least one entry was compared)."""
        return all(r.passed for r in self.rows) and sum(r.checked for r in self.rows) > 0

    def format(self) -> str:
        """The table printed by ``scripts/gradcheck.py``."""
        lines = [
            f"model: {_describe(self.model)}",
            f"inputs: {self.inputs}",
            f"loss {self.loss:.6f} nats (float64); five-point central differences, h = {self.h:g};"
            f" {'every entry' if self.full else 'a random subset of entries per parameter'}",
            f"error = max|analytic - numeric| / max(max|analytic|, max|numeric|) over the "
            f"checked entries; bound {self.tol:g}",
            "",
            f"{'parameter':<20} {'shape':>12} {'max rel error':>14} {'checked':>9} "
            f"{'kink':>6} {'max |grad|':>11}  result",
        ]
        for r in self.rows:
            result = "pass" if r.passed else "FAIL"
            if r.checked == 0:
                result += " (no entry compared: each crossed a kink; try --full or --seed)"
            elif not r.resolvable:
                result += " (gradient near rounding floor)"
            lines.append(
                f"{r.name:<20} {'x'.join(map(str, r.shape)):>12} {r.error:>14.2e} "
                f"{r.checked:>9,d} {r.kink:>6,d} {r.scale:>11.3e}  {result}"
            )
        checked = sum(r.checked for r in self.rows)
        kink = sum(r.kink for r in self.rows)
        worst = max((r.error for r in self.rows), default=0.0)
        failed = [r.name for r in self.rows if not r.passed]
        lines.append(
            f"{'total':<20} {'':>12} {worst:>14.2e} {checked:>9,d} {kink:>6,d} {'':>11}  "
            + (f"FAIL ({len(failed)} of {len(self.rows)})" if failed else "pass")
        )
        lines += ["", *self.notes]
        lines.append(
            f"{'PASSED' if self.passed else 'FAILED'}: {len(self.rows) - len(failed)} of "
            f"{len(self.rows)} parameter arrays within {self.tol:g}, {self.seconds:.1f} s"
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-serialisable data."""
        out = asdict(self)
        out["passed"] = self.passed
        return out


def rounding_floor(loss: float, h: float) -> float:
    """Rough absolute accuracy of a five-point difference of a loss of this size.

    Each of the four evaluations is rounded to about ``spacing(loss)``; the stencil's weights
    ``(1, 8, 8, 1) / 12h`` add up to ``1.5 / h``.
    """
    return 1.5 * float(numpy.spacing(abs(loss))) / h


class KinkProbe:
    """Records which side of every kink a loss evaluation is on.

    While active (a context manager), the forward method of every ReLU and LeakyReLU layer of
    the model is wrapped so that it first records the sign pattern of its input; after the
    evaluation, :meth:`pattern` adds the free-bits clamp pattern from the returned loss parts.
    """

    def __init__(self, model: VAE) -> None:
        self.model = model
        self.signs: list[Array] = []
        # The MLPs list their layers; the MADE decoder keeps its activations apart.
        decoder = model.decoder
        decoder_layers = decoder.layers if isinstance(decoder, Sequential) else decoder.activations
        self.layers = [
            layer for layer in (*model.encoder.layers, *decoder_layers) if isinstance(layer, KINKED)
        ]

    @contextlib.contextmanager
    def active(self) -> Iterator[KinkProbe]:
        def recording(original: Any) -> Any:
            def forward(x: Array) -> Array:
                self.signs.append(x > 0)
                return original(x)

            return forward

        for layer in self.layers:
            layer.forward = recording(layer.forward)  # an instance attribute shadows the method
        try:
            yield self
        finally:
            for layer in self.layers:
                del layer.forward

    def pattern(self, parts: Any) -> list[Array]:
        """The sides recorded since the last call, plus free bits' clamped dimensions."""
        signs, self.signs = self.signs, []
        if self.model.free_bits > 0:
            signs.append(parts.kl_per_dim / parts.n >= self.model.free_bits)
        return signs


def check_model(
    model: VAE,
    x: Array,
    eps: Array,
    y: Array | None = None,
    entries: int | None = 10,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    h: float = DEFAULT_STEP,
) -> tuple[list[Row], float]:
    """Check every parameter gradient of a float64 ``model`` at one batch and one noise draw.

    Parameters
    ----------
    model : VAE
        On a float64 backend; its parameters are perturbed in place and restored.
    x : array, shape (B, input_dim)
    eps : array, shape (B, latent_dim), or (B, K, latent_dim) for a multi-sample bound
        The reparameterization noise, fixed for every evaluation.
    y : int array, shape (B,), optional
        Labels of a conditional model.
    entries : int or None
        Entries checked per parameter array, chosen at random (all of them if None or if the
        array has fewer).
    seed : int
        Chooses the entries.
    tol : float
        Bound on each array's relative error.
    h : float
        Finite-difference step.

    Returns
    -------
    rows : list of Row
        One per parameter array, in the model's order.
    loss : float
        The loss at the unperturbed parameters.
    """
    if model.dtype != numpy.float64:
        raise ValueError(f"the model is {model.dtype}: gradient checks need float64")
    parts = model.loss(x, y, eps=eps)
    analytic = {name: g.copy() for name, g in model.grads.items()}
    loss = float(parts.loss)
    floor = rounding_floor(loss, h)
    probe = KinkProbe(model)
    rng = numpy.random.default_rng(seed)
    rows = []
    with probe.active():
        base = probe.pattern(model.loss(x, y, eps=eps, grad=False, validate=False))
        crossed = [False]

        def f() -> float:
            parts = model.loss(x, y, eps=eps, grad=False, validate=False)
            sides = probe.pattern(parts)
            if any(not numpy.array_equal(a, b) for a, b in zip(sides, base, strict=True)):
                crossed[0] = True
            return parts.loss

        for name, param in model.params.items():
            if entries is None or entries >= param.size:
                flat = numpy.arange(param.size)
            else:
                flat = numpy.sort(rng.choice(param.size, size=entries, replace=False))
            compared, numeric = [], []
            for i in flat:
                idx = numpy.unravel_index(i, param.shape)
                crossed[0] = False
                value = numerical_gradient(f, param, None, h, [idx], points=5)[idx]
                if not crossed[0]:
                    compared.append(idx)
                    numeric.append(value)
            exact = numpy.array([analytic[name][idx] for idx in compared])
            error = relative_error(exact, numpy.array(numeric))
            scale = float(numpy.abs(exact).max(initial=0.0))
            rows.append(
                Row(
                    name=name,
                    shape=tuple(param.shape),
                    error=error,
                    checked=len(compared),
                    kink=len(flat) - len(compared),
                    scale=scale,
                    # An array none of whose entries could be compared has not passed.
                    passed=bool(compared) and error <= tol,
                    # Rounding alone gives an error of about floor / scale: at most half of tol.
                    resolvable=2 * floor <= scale * tol,
                )
            )
    return rows, loss


def gradient_report(
    config: ModelConfig | None = None,
    batch: int = 8,
    seed: int = 0,
    entries: int | None = 10,
    tol: float = DEFAULT_TOL,
    h: float = DEFAULT_STEP,
    input_dim: int = 784,
) -> Report:
    """Build a float64 model of ``config`` (default: the default model) and check it on random
    inputs (see :func:`check_model`).

    Its weights are the initial weights for ``seed``; the inputs are uniform in [0, 1]
    (Bernoulli: grey levels, which exercise the ``x * logit`` term fully; the MADE decoder takes
    binary pixels, 0 or 1 with probability 1/2) or, for the Gaussian
    likelihood, normal around 0.5 with some values outside [0, 1]; labels (a conditional model)
    uniform over the classes; ``eps`` is standard normal; all drawn from ``seed``.
    ``entries=None`` checks every entry.
    """
    start = time.perf_counter()
    config = ModelConfig() if config is None else config
    if config.estimator != "reparam":
        raise ValueError(
            f"the {config.estimator} estimator is not the gradient of the bound (it holds some "
            "quantities fixed), so differences of the loss cannot check it; "
            "tests/test_bounds.py checks it against differences of its surrogate"
        )
    model = VAE(input_dim, config=config, backend=get_backend("numpy", "float64"), seed=seed)
    likelihood, n_classes = config.likelihood, config.n_classes
    rng = numpy.random.default_rng(seed)
    if likelihood == "gaussian":
        x = rng.normal(0.5, 0.5, size=(batch, input_dim))
        inputs = f"{batch} random images, pixels ~ N(0.5, 0.5^2) (seed {seed})"
    elif config.decoder == "made":  # binary pixels only
        x = (rng.random((batch, input_dim)) < 0.5).astype(numpy.float64)
        inputs = f"{batch} random binary images, pixels 0 or 1 with probability 1/2 (seed {seed})"
    else:
        x = rng.random((batch, input_dim))
        inputs = f"{batch} random images, pixels uniform in [0, 1] (seed {seed})"
    y = rng.integers(0, n_classes, size=batch) if n_classes else None
    if n_classes:
        inputs += f", random labels 0-{n_classes - 1}"
    eps = rng.standard_normal(model.noise_shape(batch))
    inputs += "; eps ~ N(0, I) drawn once and held fixed"
    if config.objective != "elbo":
        inputs += f" ({config.k} samples per image, the {config.objective} bound)"
    with _one_blas_thread():
        rows, loss = check_model(model, x, eps, y, entries=entries, seed=seed, tol=tol, h=h)
    floor = rounding_floor(loss, h)
    notes = []
    if any(r.kink for r in rows):
        notes.append(
            "kink: entries whose stencil (up to 2h away) crossed a ReLU kink or the free-bits "
            "allowance; there a difference quotient mixes two slopes, so they are not compared."
        )
    if not all(r.resolvable for r in rows):
        notes.append(
            f"rounding floor: the finite differences are accurate to about {floor:.1e} "
            f"(rounding of a loss of {loss:.0f} at h = {h:g}); arrays whose gradient is below "
            f"{2 * floor / tol:.1e} cannot be held to {tol:g} (try a smaller --batch-size or a "
            "looser --tol)."
        )
    return Report(
        rows=rows,
        tol=tol,
        h=h,
        loss=loss,
        floor=floor,
        seconds=time.perf_counter() - start,
        model=model.config(),
        inputs=inputs,
        full=entries is None,
        notes=notes,
    )


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run BLAS in one thread if threadpoolctl is installed.

    A check is thousands of small matrix products; handing each to a pool of BLAS threads costs
    more than it saves (the script also sets ``OPENBLAS_NUM_THREADS=1`` before NumPy loads).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _describe(config: dict[str, Any]) -> str:
    widths = "-".join(
        str(w) for w in (config["input_dim"], *config["hidden_dims"], config["latent_dim"])
    )
    text = f"{widths} {config['activation']}, {config['likelihood']}"
    if config["likelihood"] == "gaussian":
        text += f" (sigma {config['gaussian_sigma']:g})"
    if config.get("decoder") == "made":
        hidden = "-".join(str(w) for w in config["made_hidden"])
        text += f", MADE decoder {hidden}"
        text += " + direct" if config["made_direct"] else ""
        text += "" if config["made_z"] else " without z"
    if config["n_classes"]:
        text += f", conditional ({config['n_classes']} classes)"
    text += f", beta {config['beta']:g}"
    if config["free_bits"]:
        text += f", free bits {config['free_bits']:g}"
    return text + f", seed {config['seed']}, float64"
