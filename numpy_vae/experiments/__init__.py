"""Experiments: measurements that are not part of training.

- :mod:`~numpy_vae.experiments.estimators`: reparameterization against score-function gradients.
- :mod:`~numpy_vae.experiments.snr`: the signal-to-noise ratio of the IWAE gradient against K.
- :mod:`~numpy_vae.experiments.benchmark`: an epoch timed against PyTorch and the GEMM floor.
- :mod:`~numpy_vae.experiments.burda`: the Burda et al. (2016) protocol (a preset) and its study.
- :mod:`~numpy_vae.experiments.collapse`: posterior collapse with a MADE decoder, and remedies.
- :mod:`~numpy_vae.experiments.disentanglement`: the mutual information gap and the FactorVAE
  score, of a representation of dSprites' factors (a VAE's posterior means).
- :mod:`~numpy_vae.experiments.disentanglement_study`: beta-VAE on dSprites, a row per beta:
  reconstruction against the two metrics.
- :mod:`~numpy_vae.experiments.variants`: the table of finished runs, labelled by variant.
- :mod:`~numpy_vae.experiments.conditional`: how much of the label a conditional VAE's z
  carries, and an image classifier's reading of its class samples and style analogies.
- :mod:`~numpy_vae.experiments.completion_study`: MNIST quadrant completion, the baseline
  network against the CVAE with a learned prior, the GSNN and the hybrid objective (a minimal
  training and evaluation, and the resumable study).
"""
