"""Training: data, the trainer, checkpoints, atomic writes, run folders, figures, evaluation.

- :mod:`~numpy_vae.training.data`: MNIST, fetched, verified and cached; :class:`Dataset`, and
  :class:`ImageSplit`, which scales and binarizes it batch by batch as the trainer iterates it.
- :mod:`~numpy_vae.training.dsprites`: dSprites drawn from its factors, batch by batch, and as
  a :class:`~numpy_vae.training.data.Dataset` sample for the trainer.
- :mod:`~numpy_vae.training.trainer`: :class:`TrainConfig`, :class:`Trainer`.
- :mod:`~numpy_vae.training.presets`: the learning-rate schedules and initializations that a
  configuration names, as plain callables (presets of the experiments register theirs).
- :mod:`~numpy_vae.training.evaluate`: importance-weighted log-likelihood, active units.
- :mod:`~numpy_vae.training.checkpoint`, :mod:`~numpy_vae.training.atomic`: files that are never
  half-written.
- :mod:`~numpy_vae.training.runs`: a run folder from start to resume.
- :mod:`~numpy_vae.training.plots`: the figures; :mod:`~numpy_vae.training.conditional`: a
  conditional model's class samples and style analogies.
"""
