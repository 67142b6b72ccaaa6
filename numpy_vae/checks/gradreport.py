"""A gradient-check report of a whole model: one row per parameter array, pass or fail.

This is what ``scripts/gradcheck.py`` prints, and what a student runs after changing a
derivative. The model is built in float64, the reparameterization noise ``eps`` is drawn once and
passed in, so the loss is a deterministic function of the parameters, and every checked entry's
analytic gradient is compared with the five-point central difference of
:func:`numpy_vae.gradcheck.numerical_gradient`. An array's error is the relative error of
:func:`numpy_vae.gradcheck.relative_error` over its checked entries.

**Two paths, three sections.** Training does not run the specification (:class:`numpy_vae.VAE`)
but the fast path (:class:`numpy_vae.fast.FastVAE`, whose ``loss()`` runs the fast step of its
objective, :class:`~numpy_vae.fast.objectives.FastELBO` or
:class:`~numpy_vae.fast.objectives.FastMultiSample`). A derivative can be right in one and wrong
in the other, so the report checks, at the same parameters, inputs and ``eps``:

1. the specification's gradients against finite differences of its loss;
2. the fast path's gradients against finite differences of its own loss (same bound);
3. the fast path's gradients against the specification's, array by array, as
   ``max|g_fast - g_spec| / max|g_spec|`` against ``64 n eps`` (float64 ``eps = 2**-52``,
   ``n = B K + D + H``: the batch's rows, the pixels and the widest hidden layer, the longest
   sums a gradient entry is formed from). ``tests/test_fast_vs_reference.py`` holds the fast
   step to bitwise equality (the ELBO) or to ``8 (B K + D + H) u = 4 n eps`` (the multi-sample
   bounds, other groupings of the same sums); the report's bound is 16 times that, still some
   ten orders of magnitude below what a wrong factor in a derivative gives. The loss is compared
   the same way, relative to ``|loss_spec|``.

The STL and DReG estimators are not gradients of the loss (they hold some quantities fixed), so
for them differences of the loss check nothing and only section 3 runs.

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
from numpy_vae.fast import FastVAE
from numpy_vae.fast.layers import FastLeakyReLU, FastReLU, FastSequential
from numpy_vae.gradcheck import numerical_gradient, relative_error
from numpy_vae.layers import LeakyReLU, ReLU, Sequential
from numpy_vae.model import VAE

Array = Any
# The layers with a kink at 0: the specification's and their fast twins (which the fast step runs).
KINKED = (ReLU, LeakyReLU, FastReLU, FastLeakyReLU)
DEFAULT_TOL = 1e-7
DEFAULT_STEP = 1e-4
#: Which code the report checks: the specification, the fast path, or both (the default).
PATHS = ("spec", "fast", "both")
#: The fast path against the specification: ``AGREEMENT_FACTOR * n * eps`` (see the module).
AGREEMENT_FACTOR = 64
EPS64 = float(numpy.finfo(numpy.float64).eps)
SPEC_TITLE = "specification"
FAST_TITLE = "fast path"
AGREEMENT_TITLE = "fast path against the specification"


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
class Agreement:
    """The fast path's gradient of one parameter array (or its loss) against the specification's.

    Attributes
    ----------
    name : parameter name, or ``loss``
    shape : its shape (``()`` for the loss)
    error : ``max|fast - spec| / max|spec|`` (0 if both are 0, inf if only ``spec`` is)
    scale : ``max|spec|``
    passed : ``error <= bound``
    """

    name: str
    shape: tuple[int, ...]
    error: float
    scale: float
    passed: bool


@dataclass
class Report:
    """A whole-model gradient check: the rows and how they were obtained.

    ``rows`` is the specification against finite differences, ``fast_rows`` the fast path
    against finite differences, ``agreement`` the fast path against the specification (with its
    bound ``agreement_tol``, ``AGREEMENT_FACTOR * agreement_terms * eps``); a section that was
    not run (see ``path`` and ``differentiable``) is empty.
    """

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
    path: str = "spec"
    differentiable: bool = True
    fast_step: str = ""
    fast_rows: list[Row] = field(default_factory=list)
    agreement: list[Agreement] = field(default_factory=list)
    agreement_tol: float = 0.0
    agreement_terms: int = 0

    def sections(self) -> list[tuple[str, bool, int, int]]:
        """``(title, passed, rows passed, rows)`` of each section that was run, in order."""
        out = []
        for title, rows in ((SPEC_TITLE, self.rows), (FAST_TITLE, self.fast_rows)):
            if rows:
                # A finite-difference section with no entry compared anywhere has not passed.
                ok = all(r.passed for r in rows) and sum(r.checked for r in rows) > 0
                out.append((title, ok, sum(r.passed for r in rows), len(rows)))
        if self.agreement:
            good = sum(a.passed for a in self.agreement)
            out.append((AGREEMENT_TITLE, good == len(self.agreement), good, len(self.agreement)))
        return out

    @property
    def failed_sections(self) -> list[str]:
        """The titles of the sections that failed."""
        return [title for title, ok, _, _ in self.sections() if not ok]

    @property
    def passed(self) -> bool:
        """Every section that was run passed (and at least one was run)."""
        return bool(self.sections()) and not self.failed_sections

    def format(self) -> str:
        """The tables printed by ``scripts/gradcheck.py``."""
        lines = [
            f"model: {_describe(self.model)}",
            f"inputs: {self.inputs}",
            f"loss {self.loss:.6f} nats (float64); five-point central differences, h = {self.h:g};"
            f" {'every entry' if self.full else 'a random subset of entries per parameter'}",
            f"error = max|analytic - numeric| / max(max|analytic|, max|numeric|) over the "
            f"checked entries; bound {self.tol:g}",
        ]
        if self.rows:
            lines += ["", f"{SPEC_TITLE} (numpy_vae.VAE) against finite differences of its loss"]
            lines += _difference_table(self.rows)
        if self.fast_rows:
            lines += [
                "",
                f"{FAST_TITLE} (numpy_vae.fast.FastVAE, step {self.fast_step}: what training "
                "runs) against finite differences of its loss",
            ]
            lines += _difference_table(self.fast_rows)
        if self.agreement:
            lines += ["", *self._agreement_table()]
        lines += ["", *self.notes]
        summary = []
        for title, _, good, total in self.sections():
            within = f"within {self.tol:g}" if title != AGREEMENT_TITLE else "within the bound"
            summary.append(f"{title} {good} of {total} {within}")
        failed = self.failed_sections
        verdict = "PASSED" if self.passed else f"FAILED ({', '.join(failed) or 'nothing run'})"
        lines.append(f"{verdict}: {'; '.join(summary)}; {self.seconds:.1f} s")
        return "\n".join(lines)

    def _agreement_table(self) -> list[str]:
        n, w = self.agreement_terms, _name_width(self.agreement)
        lines = [
            f"{AGREEMENT_TITLE} (same parameters, x and eps; step {self.fast_step})",
            f"error = max|g_fast - g_spec| / max|g_spec| per array (the loss: relative to "
            f"|loss_spec|); bound {AGREEMENT_FACTOR} n eps = {self.agreement_tol:.2e}, "
            f"n = B K + D + H = {n} terms, eps = 2^-52",
            f"{'parameter':<{w}} {'shape':>12} {'max rel diff':>14} {'max |spec|':>11}  result",
        ]
        for a in self.agreement:
            lines.append(
                f"{a.name:<{w}} {'x'.join(map(str, a.shape)):>12} {a.error:>14.2e} "
                f"{a.scale:>11.3e}  {'pass' if a.passed else 'FAIL'}"
            )
        failed = [a.name for a in self.agreement if not a.passed]
        worst = max((a.error for a in self.agreement), default=0.0)
        lines.append(
            f"{'total':<{w}} {'':>12} {worst:>14.2e} {'':>11}  "
            + (f"FAIL ({len(failed)} of {len(self.agreement)})" if failed else "pass")
        )
        return lines

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-serialisable data."""
        out = asdict(self)
        out["passed"] = self.passed
        out["failed_sections"] = self.failed_sections
        return out


def _name_width(rows: list[Any]) -> int:
    """The name column's width: 20, or the longest name (the MADE decoder's are longer)."""
    return max([20, *(len(r.name) for r in rows)])


def _difference_table(rows: list[Row]) -> list[str]:
    """One finite-difference section: a row per parameter array and the total."""
    w = _name_width(rows)
    lines = [
        f"{'parameter':<{w}} {'shape':>12} {'max rel error':>14} {'checked':>9} "
        f"{'kink':>6} {'max |grad|':>11}  result",
    ]
    for r in rows:
        result = "pass" if r.passed else "FAIL"
        if r.checked == 0:
            result += " (no entry compared: each crossed a kink; try --full or --seed)"
        elif not r.resolvable:
            result += " (gradient near rounding floor)"
        lines.append(
            f"{r.name:<{w}} {'x'.join(map(str, r.shape)):>12} {r.error:>14.2e} "
            f"{r.checked:>9,d} {r.kink:>6,d} {r.scale:>11.3e}  {result}"
        )
    checked = sum(r.checked for r in rows)
    kink = sum(r.kink for r in rows)
    worst = max((r.error for r in rows), default=0.0)
    failed = [r.name for r in rows if not r.passed]
    lines.append(
        f"{'total':<{w}} {'':>12} {worst:>14.2e} {checked:>9,d} {kink:>6,d} {'':>11}  "
        + (f"FAIL ({len(failed)} of {len(rows)})" if failed else "pass")
    )
    return lines


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
    For a :class:`~numpy_vae.fast.FastVAE` the fast twins of those layers are wrapped too: its
    step runs them, not the specification's layers (except where the fast step falls back on the
    specification's, so both are watched).
    """

    def __init__(self, model: VAE) -> None:
        self.model = model
        self.signs: list[Array] = []
        layers = [*model.encoder.layers, *_decoder_layers(model.decoder, Sequential)]
        if isinstance(model, FastVAE):
            layers += [
                *model.fast_encoder.layers,
                *_decoder_layers(model.fast_decoder, FastSequential),
            ]
        self.layers = [layer for layer in layers if isinstance(layer, KINKED)]

    @contextlib.contextmanager
    def active(self) -> Iterator[KinkProbe]:
        def recording(layer: Any) -> Any:
            original = layer.forward
            # A fast ReLU may add the bias of the Linear layer before it (its ``linear``): the
            # kink is where that sum crosses 0, computed here as the kernel computes it.
            linear = getattr(layer, "linear", None)

            # The fast layers take ``out=`` and may work in place: record before the call.
            def forward(x: Array, *args: Any, **kwargs: Any) -> Array:
                self.signs.append((x if linear is None else x + linear.bias) > 0)
                return original(x, *args, **kwargs)

            return forward

        for layer in self.layers:
            layer.forward = recording(layer)  # an instance attribute shadows the method
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


def _decoder_layers(decoder: Any, sequential: type) -> list[Any]:
    """The layers of a decoder: an MLP lists them all; a MADE decoder keeps its activations
    apart from its masked layers (only the activations can have kinks)."""
    return list(decoder.layers if isinstance(decoder, sequential) else decoder.activations)


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
        On a float64 backend; its parameters are perturbed in place and restored. A
        :class:`~numpy_vae.fast.FastVAE` is checked through its own step (its ``loss()``), the
        code that training runs.
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


def agreement_terms(model: VAE, batch: int) -> int:
    """``n = B K + D + H`` of the agreement bound: the batch's rows (``K`` samples per example),
    the pixels and the widest hidden layer (of the encoder, or of a MADE decoder)."""
    widths = [*model.hparams.hidden_dims]
    if "made_hidden" in model.decoder.settings:  # a decoder with hidden widths of its own
        widths += model.hparams.made_hidden
    return batch * model.objective.k + model.input_dim + max(widths, default=0)


def compare_paths(
    fast: VAE,
    spec: VAE,
    x: Array,
    eps: Array,
    y: Array | None = None,
    bound: float = 0.0,
) -> list[Agreement]:
    """The fast path's gradients (and loss) against the specification's, at one batch and noise.

    Parameters
    ----------
    fast, spec : VAE
        A :class:`~numpy_vae.fast.FastVAE` and a :class:`~numpy_vae.VAE` holding the same
        parameters, both float64.
    x, eps, y : arrays
        As for :func:`check_model`; both models see the same ones.
    bound : float
        The largest ``max|g_fast - g_spec| / max|g_spec|`` that passes (the loss: relative to
        ``|loss_spec|``).

    Returns
    -------
    list of Agreement
        One per parameter array, in the specification's order, then one for the loss.
    """
    fast_loss = float(fast.loss(x, y, eps=eps).loss)
    fast_grads = {name: g.copy() for name, g in fast.grads.items()}  # views of fast.flat.grad
    spec_loss = float(spec.loss(x, y, eps=eps).loss)
    if set(fast_grads) != set(spec.grads):
        raise ValueError(
            f"the fast path's parameters {sorted(fast_grads)} are not the specification's "
            f"{sorted(spec.grads)}"
        )
    rows = []
    pairs = [(name, fast_grads[name], g) for name, g in spec.grads.items()]
    pairs.append(("loss", numpy.array(fast_loss), numpy.array(spec_loss)))
    for name, mine, theirs in pairs:
        scale = float(numpy.abs(theirs).max(initial=0.0))
        diff = float(numpy.abs(mine - theirs).max(initial=0.0))
        # An array whose specification gradient is 0 everywhere must be 0 on the fast path too.
        error = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        # ``not error > bound`` would pass a NaN; a NaN gradient must fail.
        rows.append(Agreement(name, tuple(numpy.shape(theirs)), error, scale, error <= bound))
    return rows


def gradient_report(
    config: ModelConfig | None = None,
    batch: int = 8,
    seed: int = 0,
    entries: int | None = 10,
    tol: float = DEFAULT_TOL,
    h: float = DEFAULT_STEP,
    input_dim: int = 784,
    path: str = "both",
) -> Report:
    """Build a float64 model of ``config`` (default: the default model) and check it on random
    inputs: the specification and the fast path against finite differences
    (:func:`check_model`), and the fast path against the specification (:func:`compare_paths`).

    Its weights are the initial weights for ``seed``; the inputs are uniform in [0, 1]
    (Bernoulli: grey levels, which exercise the ``x * logit`` term fully; the MADE decoder takes
    binary pixels, 0 or 1 with probability 1/2) or, for the Gaussian
    likelihood, normal around 0.5 with some values outside [0, 1]; labels (a conditional model)
    uniform over the classes; ``eps`` is standard normal; all drawn from ``seed``.
    ``entries=None`` checks every entry. ``path`` (one of :data:`PATHS`) chooses the sections:
    ``spec`` the specification against finite differences only, ``fast`` the fast path against
    finite differences and against the specification, ``both`` all three. For the STL and DReG
    estimators only the fast path against the specification is meaningful (``spec`` is refused).
    """
    start = time.perf_counter()
    config = ModelConfig() if config is None else config
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}, not {path!r}")
    differentiable = config.estimator == "reparam"
    not_a_gradient = (
        f"the {config.estimator} estimator is not the gradient of the bound (it holds some "
        "quantities fixed), so differences of the loss cannot check it; "
        "tests/test_bounds.py checks it against differences of its surrogate"
    )
    if not differentiable and path == "spec":
        raise ValueError(
            not_a_gradient + "; --path fast (or both) compares the fast path's estimator with "
            "the specification's"
        )
    backend = get_backend("numpy", "float64")
    model = VAE(input_dim, config=config, backend=backend, seed=seed)
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

    fast = None
    fast_step = ""
    if path != "spec":
        # The same weights by construction (same seed); copied anyway, so that the comparison
        # does not rest on the two constructors drawing in the same order.
        fast = FastVAE(input_dim, config=config, backend=backend, seed=seed)
        fast.load_state_dict(model.state_dict())
        fast_step = type(fast.objective).__name__
    rows: list[Row] = []
    fast_rows: list[Row] = []
    agreement: list[Agreement] = []
    terms = agreement_terms(model, batch)
    bound = AGREEMENT_FACTOR * terms * EPS64
    with _one_blas_thread():
        if differentiable and path != "fast":
            rows, loss = check_model(model, x, eps, y, entries=entries, seed=seed, tol=tol, h=h)
        else:  # the loss's size still sets the rounding floor of the notes
            loss = float(model.loss(x, y, eps=eps, grad=False).loss)
        if differentiable and fast is not None:
            # The same entries as the specification's section (the same seed chooses them).
            fast_rows, _ = check_model(fast, x, eps, y, entries=entries, seed=seed, tol=tol, h=h)
        if fast is not None:
            agreement = compare_paths(fast, model, x, eps, y, bound=bound)
    floor = rounding_floor(loss, h)
    notes = []
    if not differentiable:
        notes.append(f"{not_a_gradient}: only the fast path against the specification is shown.")
    checked_rows = rows + fast_rows
    if any(r.kink for r in checked_rows):
        notes.append(
            "kink: entries whose stencil (up to 2h away) crossed a ReLU kink or the free-bits "
            "allowance; there a difference quotient mixes two slopes, so they are not compared."
        )
    if not all(r.resolvable for r in checked_rows):
        notes.append(
            f"rounding floor: the finite differences are accurate to about {floor:.1e} "
            f"(rounding of a loss of {loss:.0f} at h = {h:g}); arrays whose gradient is below "
            f"{2 * floor / tol:.1e} cannot be held to {tol:g} (try a larger --h: the floor falls "
            "as 1/h while the five-point stencil's truncation error grows only as h^4; or a "
            "smaller --batch-size, or a looser --tol)."
        )
    report = Report(
        rows=rows,
        tol=tol,
        h=h,
        loss=loss,
        floor=floor,
        seconds=0.0,
        model=model.config(),
        inputs=inputs,
        full=entries is None,
        notes=notes,
        path=path,
        differentiable=differentiable,
        fast_step=fast_step,
        fast_rows=fast_rows,
        agreement=agreement,
        agreement_tol=bound,
        agreement_terms=terms,
    )
    if FAST_TITLE in report.failed_sections or AGREEMENT_TITLE in report.failed_sections:
        notes.append(_diagnosis(report))
    report.seconds = time.perf_counter() - start
    return report


def _diagnosis(report: Report) -> str:
    """Which code is wrong, read off the sections that failed."""
    failed = report.failed_sections
    if SPEC_TITLE in failed and FAST_TITLE not in failed:
        return (
            "the specification fails its finite differences and the fast path differs from it: "
            "the derivative to fix is the specification's (numpy_vae/*.py)."
        )
    if SPEC_TITLE in failed:
        return "both paths fail their finite differences: the derivative is wrong in both."
    return (
        "the fast path (numpy_vae/fast/, what training runs) disagrees: its gradient is not the "
        "specification's; the derivative to fix is in numpy_vae/fast/."
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
