"""Checks of the specification against outside references.

- :mod:`~numpy_vae.checks.gradreport`: every parameter's gradient against finite differences.
- :mod:`~numpy_vae.checks.torch_twin`: the same model in PyTorch, compared step by step.
- :mod:`~numpy_vae.checks.golden`: golden files that pin down what the model computes.
"""
