"""Evaluation (layer 4): what a model shows after unlearning.

``metrics`` (UA, RA, TA, MIA-efficacy, Avg. gap, entropy diagnostics),
``mia`` (the shadow attack), ``logit_math``, ``audit`` (the per-example
forgetting audit of the unlearning challenge), ``stats`` and ``pairing``
(confidence intervals and paired tests over seeds).

Imports: NumPy, JAX and :mod:`oeu_jax.defaults`; nothing of the layers
above.
"""
