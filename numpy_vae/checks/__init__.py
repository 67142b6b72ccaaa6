"""Checks of the specification against outside references.

- :mod:`~numpy_vae.checks.gradreport`: every parameter's gradient against finite differences, on
  the specification and on the fast path that training runs, and the two against each other.
- :mod:`~numpy_vae.checks.torch_twin`: the same model in PyTorch, compared step by step.
- :mod:`~numpy_vae.checks.torch_completion`: the completion models of
  :mod:`numpy_vae.completion` and :mod:`numpy_vae.gsnn` in PyTorch, compared the same way.
- :mod:`~numpy_vae.checks.golden`: golden files that pin down what the model computes.
"""
