"""The model's hyperparameters, declared once.

:class:`ModelConfig` names every hyperparameter of the model with its default, its range and its
help text. Everything else is derived from it: :class:`numpy_vae.VAE` validates its arguments
here, the PyTorch twin and the gradient report take a ``ModelConfig``,
:class:`numpy_vae.training.trainer.TrainConfig` extends it, and the command-line flags of
``train_mnist.py`` and ``gradcheck.py`` are generated from its fields
(:func:`numpy_vae.cli.common.add_model_flags`). Adding a hyperparameter is one field here (and
its use in the model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy

from numpy_vae.bounds import ESTIMATORS
from numpy_vae.decoders import DECODERS
from numpy_vae.layers import ACTIVATIONS
from numpy_vae.likelihoods import LIKELIHOODS
from numpy_vae.objectives import OBJECTIVES


@dataclass(frozen=True)
class Range:
    """What values a hyperparameter takes, checked in one place.

    Attributes
    ----------
    kind : {"int", "float", "choice", "widths", "bool"}
        An integer, a finite real number, one of ``choices``, a tuple of positive integers, or
        true/false (a switch on the command line).
    low : float
        Smallest allowed value (``int``, ``float``); ``inclusive`` says whether ``low`` itself is.
    high : float
        A bound the value must stay below (``float``; ``inf``: none).
    choices : tuple of str
        The allowed names (``choice``).
    """

    kind: str
    low: float = 0
    inclusive: bool = True
    high: float = math.inf
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """The range in words, for error messages: ``an integer >= 1``, ``one of relu, tanh``."""
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)}"
        if self.kind == "widths":
            return "a list of at least one hidden width, each a positive integer (e.g. (400,))"
        if self.kind == "bool":
            return "true or false"
        bound = f"{'>=' if self.inclusive else '>'} {self.low:g}"
        bound += f" and < {self.high:g}" if self.high < math.inf else ""
        return f"an integer {bound}" if self.kind == "int" else f"a finite number {bound}"

    def check(self, name: str, value: Any) -> Any:
        """``value`` in its canonical type (``float``, ``int``, ``tuple``), or a ValueError that
        names the hyperparameter and its range."""
        if self.kind == "choice":
            ok = isinstance(value, str) and value in self.choices
        elif self.kind == "bool":
            ok = isinstance(value, bool | numpy.bool_)
            value = bool(value) if ok else value
        elif self.kind == "widths":
            ok = isinstance(value, list | tuple) and len(value) > 0
            ok = ok and all(_is_int(w) and w >= 1 for w in value)
            value = tuple(int(w) for w in value) if ok else value
        elif self.kind == "int":
            ok = _is_int(value) and (value >= self.low if self.inclusive else value > self.low)
            value = int(value) if ok else value
        else:
            ok = (
                isinstance(value, int | float | numpy.floating | numpy.integer)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and (value >= self.low if self.inclusive else value > self.low)
                and value < self.high
            )
            value = float(value) if ok else value
        if ok:
            return value
        if self.kind == "choice":
            raise ValueError(f"unknown {name} {value!r}; choose {self.describe()}")
        if self.kind == "widths" and isinstance(value, list | tuple):
            if not value:
                raise ValueError(f"{name} must list at least one hidden width, e.g. (400,)")
            raise ValueError(f"every hidden width must be a positive integer, got {value!r}")
        raise ValueError(f"{name} must be {self.describe()}, got {value!r}")


def hyperparameter(default: Any, valid: Range, help: str, **cli: Any) -> Any:
    """A dataclass field with its range and help text (and, optionally, how its flag differs
    from the default ``--name-with-dashes`` taking one value: ``cli``)."""
    return field(default=default, metadata={"range": valid, "help": help, "cli": cli})


@dataclass
class ModelConfig:
    """Every hyperparameter of the model; the defaults are the classic PyTorch MNIST example.

    The input width is not a hyperparameter: it is the data's (``VAE(input_dim=...)``).
    """

    hidden_dims: tuple[int, ...] = hyperparameter(
        (400,),
        Range("widths"),
        "hidden widths of the encoder (the decoder mirrors them)",
        flag="--hidden",
    )
    latent_dim: int = hyperparameter(20, Range("int", 1), "size of z")
    activation: str = hyperparameter(
        "relu", Range("choice", choices=tuple(ACTIVATIONS)), "hidden activation"
    )
    leaky_relu_slope: float = hyperparameter(
        0.01,
        Range("float", 0, inclusive=False, high=1),
        "slope of the leaky_relu activation for negative inputs (as torch.nn.LeakyReLU)",
    )
    likelihood: str = hyperparameter(
        "bernoulli", Range("choice", choices=tuple(LIKELIHOODS)), "decoder distribution p(x|z)"
    )
    gaussian_sigma: float = hyperparameter(
        1.0,
        Range("float", 0, inclusive=False),
        "fixed standard deviation of the Gaussian likelihood",
    )
    n_classes: int = hyperparameter(
        0,
        Range("int", 0),
        "conditional VAE: the one-hot digit label is fed to encoder and decoder",
        flag="--conditional",
        const=10,  # the flag is a switch: the ten MNIST digits
    )
    beta: float = hyperparameter(1.0, Range("float", 0), "weight of the KL term (beta-VAE)")
    free_bits: float = hyperparameter(
        0.0, Range("float", 0), "free-bits allowance in nats per latent dimension (0: off)"
    )
    objective: str = hyperparameter(
        "elbo",
        Range("choice", choices=tuple(OBJECTIVES)),
        "what training maximises: elbo (one z, analytic KL), vae (the k-sample VAE bound, "
        "(1/K) sum_k log w_k) or iwae (the importance-weighted bound, log (1/K) sum_k w_k)",
    )
    k: int = hyperparameter(1, Range("int", 1), "samples of z per example (vae and iwae)")
    estimator: str = hyperparameter(
        "reparam",
        Range("choice", choices=tuple(ESTIMATORS)),
        "encoder gradient of the iwae bound: reparam (plain), stl (sticking the landing) or "
        "dreg (doubly reparameterized)",
    )

    decoder: str = hyperparameter(
        "mlp",
        Range("choice", choices=tuple(DECODERS)),
        "decoder p(x|z): mlp (pixels independent given z) or made (autoregressive over the "
        "pixels given z, Germain et al. 2015; binary data and the Bernoulli likelihood only)",
    )
    made_hidden: tuple[int, ...] = hyperparameter(
        (500,),
        Range("widths"),
        "hidden widths of the MADE decoder (their number is its depth)",
        flag="--made-hidden",
    )
    made_direct: bool = hyperparameter(
        False, Range("bool"), "MADE decoder: add a direct masked connection from pixels to logits"
    )
    made_z: bool = hyperparameter(
        True,
        Range("bool"),
        "MADE decoder without z (nor the label of a conditional model): the autoregressive "
        "model alone, whose log p(x) is exact",
        flag="--made-without-z",
    )

    def __post_init__(self) -> None:
        problems = []
        for f in fields(ModelConfig):
            try:
                value = f.metadata["range"].check(f.name, getattr(self, f.name))
                setattr(self, f.name, value)
            except ValueError as err:
                problems.append(str(err))
        if not problems:
            problems = self._objective_problems()
        if problems:
            raise ValueError("; ".join(problems))

    def _objective_problems(self) -> list[str]:
        """What does not fit together among the settings, from what the chosen objective,
        estimator, decoder and likelihood classes declare of themselves."""
        problems = []
        objective, decoder = OBJECTIVES[self.objective], DECODERS[self.decoder]
        if not objective.multi_sample and self.k != 1:
            problems.append(
                "k > 1 needs a multi-sample objective: objective='vae' or 'iwae' (the elbo "
                "objective uses one z and the analytic KL)"
            )
        if self.estimator not in objective.estimators:
            problems.append(
                f"estimator {self.estimator!r} is an encoder gradient of the iwae bound; "
                "use objective='iwae', or estimator='reparam'"
            )
        if objective.multi_sample and (self.beta != 1 or self.free_bits != 0):
            problems.append(
                "beta and free_bits act on the analytic KL term of the elbo objective; the "
                f"{self.objective} objective samples the KL inside log w (leave beta=1, "
                "free_bits=0)"
            )
        if decoder.binary_pixels and not LIKELIHOODS[self.likelihood].draws_binary:
            problems.append(
                f"the {self.decoder} decoder models binary pixels: it needs likelihood='bernoulli'"
            )
        defaults = {f.name: f.default for f in fields(ModelConfig)}
        if (
            self.activation != "leaky_relu"
            and self.leaky_relu_slope != defaults["leaky_relu_slope"]
        ):
            problems.append(
                "leaky_relu_slope configures the leaky_relu activation: set activation='leaky_relu'"
            )
        for name, other in DECODERS.items():  # another decoder's settings, changed
            changed = [s for s in other.settings if getattr(self, s) != defaults[s]]
            if name != self.decoder and changed:
                verb = "configures" if len(changed) == 1 else "configure"
                problems.append(
                    f"{', '.join(changed)} {verb} the {name.upper()} decoder: set decoder='{name}'"
                )
        return problems

    @staticmethod
    def of(config: Any, hyperparameters: dict[str, Any]) -> ModelConfig:
        """The model's configuration from a constructor's arguments: ``config`` (its model
        fields, if it is a training configuration) or one built from ``hyperparameters``, not
        both (:class:`numpy_vae.VAE` takes either)."""
        if config is None:
            return ModelConfig(**hyperparameters)
        if hyperparameters:
            raise ValueError("give the hyperparameters either as config= or by name, not both")
        if not isinstance(config, ModelConfig):
            raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
        return config.model_config()

    @property
    def conditional(self) -> bool:
        """Whether the model is a conditional VAE (``n_classes > 0``)."""
        return self.n_classes > 0

    def model_config(self) -> ModelConfig:
        """The model's hyperparameters alone (a ``ModelConfig``, also of a subclass)."""
        return ModelConfig(**{f.name: getattr(self, f.name) for f in fields(ModelConfig)})

    def model_json(self) -> dict[str, Any]:
        """The hyperparameters as JSON values (the widths, ``hidden_dims`` and ``made_hidden``,
        as lists)."""
        d = {}
        for f in fields(ModelConfig):
            value = getattr(self, f.name)
            d[f.name] = list(value) if f.metadata["range"].kind == "widths" else value
        return d


MODEL_FIELDS = tuple(f.name for f in fields(ModelConfig))


def _is_int(value: Any) -> bool:
    return isinstance(value, int | numpy.integer) and not isinstance(value, bool)
