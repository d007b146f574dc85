"""The experiment runner: configs, work-directory layout, stages, outputs.

* :mod:`~oeu_jax.runner.config`: :class:`RunConfig`, its validation and the
  default budget tables (the only copy of them);
* :mod:`~oeu_jax.runner.layout`: work-directory names, fingerprints,
  ``model.json``, atomic JSON and ``results.json``;
* :mod:`~oeu_jax.runner.pipeline`: Original, Retrain and every method over
  the seeds, run one seed at a time or as vmapped programs;
* :mod:`~oeu_jax.runner.evaluate`: one model on one split -> a record;
* :mod:`~oeu_jax.runner.report`: tables and plots of the records;
* :mod:`~oeu_jax.runner.export`: a work directory's models in integer
  serving form (:mod:`oeu_jax.nn.serving`).
"""
