"""Training: data, the trainer, checkpoints, atomic writes, run folders, figures, evaluation.

- :mod:`~numpy_vae.training.data`: MNIST, fetched, verified and cached; scaling and binarization.
- :mod:`~numpy_vae.training.trainer`: :class:`TrainConfig`, :class:`Dataset`, :class:`Trainer`.
- :mod:`~numpy_vae.training.evaluate`: importance-weighted log-likelihood, active units.
- :mod:`~numpy_vae.training.checkpoint`, :mod:`~numpy_vae.training.atomic`: files that are never
  half-written.
- :mod:`~numpy_vae.training.runs`: a run folder from start to resume.
- :mod:`~numpy_vae.training.plots`: the figures.
"""
