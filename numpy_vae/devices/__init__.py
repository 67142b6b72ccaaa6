"""Devices other than the host.

- :mod:`~numpy_vae.devices.strict`: a CPU stand-in with CuPy's manners, for the tests. It imports
  nothing from numpy_vae: :mod:`numpy_vae.backend` draws on it when ``"strict"`` is chosen.
- :mod:`~numpy_vae.devices.gpucheck`: the CuPy backend checked against NumPy on a real GPU.
"""
