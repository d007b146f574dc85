"""The engine (layer 3): the one host loop around a jitted step.

``train`` (Original / Retrain) and ``unlearn`` (every method) build a pure
step and hand it to ``loop`` (the host loop: checkpoints, resume, stops,
progress, non-finite policy), which runs it through an executor
(``executors``: one dispatch per step or a scanned chunk, one program per
step kind); ``seeds`` runs N seeds as one vmapped program. Also here:
``schedule`` (which batches each unlearning step sees), ``stopping``,
``checkpointing`` / ``checkpoint_io``, ``tally``, ``progress``, ``mesh``,
``seedwise_conv``.

Imports: :mod:`oeu_jax.data`, :mod:`oeu_jax.nn`, :mod:`oeu_jax.algorithm`,
:mod:`oeu_jax.defaults`.
"""
