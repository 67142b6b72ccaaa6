"""Experiments: measurements that are not part of training.

- :mod:`~numpy_vae.experiments.estimators`: reparameterization against score-function gradients.
- :mod:`~numpy_vae.experiments.snr`: the signal-to-noise ratio of the IWAE gradient against K.
- :mod:`~numpy_vae.experiments.benchmark`: an epoch timed against PyTorch and the GEMM floor.
"""
