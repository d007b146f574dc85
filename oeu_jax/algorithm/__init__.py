"""The unlearning algorithms (layer 2): what a step computes.

``losses`` (cross-entropy, prediction entropy, the forget objectives),
``transforms`` (the optax projection ``project_orthogonal`` and
``add_reference``), ``variants`` (OEU's variant projections), ``optim``
(the SGD every method and the trainer share) and ``methods/`` (one module
per method family; ``methods.REGISTRY`` and ``build_method``).

Imports: :mod:`oeu_jax.nn` (a method's forward pass) and
:mod:`oeu_jax.defaults`; never the engine, evaluation or runner.
"""
