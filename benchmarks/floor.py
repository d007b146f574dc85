"""The physical floor of a compiled step: its FLOPs over matmul throughput.

``floor_s = step_flops(compiled) / matmul_flops_per_s``, where the FLOPs
are XLA's cost analysis of the compiled executable
(``jax.jit(f).lower(...).compile().cost_analysis()["flops"]``) and the
throughput is that of an ``n x n`` float32 matmul (2 n^3 FLOPs) measured
in the same process, at the same thread setting and interleaved with the
steps (:class:`MatmulTimer`), so that the floor is what the machine's
best-case kernel would need for the step's arithmetic. A step at 1.0x its
floor would run every FLOP at dense-matmul speed.
"""

import jax
import jax.numpy as jnp


def step_flops(compiled) -> float:
  """FLOPs of one call of a compiled executable (XLA's cost analysis)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per program.
    cost = cost[0]
  if not cost or "flops" not in cost:
    raise ValueError("XLA's cost analysis gave no 'flops' for this step")
  return float(cost["flops"])


class MatmulTimer:
  """An ``n x n`` float32 matmul, compiled; call it to run it once."""

  def __init__(self, n: int = 2048):
    if n < 1:
      raise ValueError(f"matmul size must be positive, got {n}")
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    self.a = jax.random.normal(key_a, (n, n), jnp.float32)
    self.b = jax.random.normal(key_b, (n, n), jnp.float32)
    self.fn = jax.jit(jnp.matmul).lower(self.a, self.b).compile()
    self.flops = 2.0 * n ** 3
    self()  # Warm-up.

  def __call__(self):
    jax.block_until_ready(self.fn(self.a, self.b))
