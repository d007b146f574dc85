"""Data: where examples come from and how they are split (layer 0).

``datasets`` loads a dataset into NumPy arrays (scikit-learn's digits, a
local folder of MNIST IDX files, TFDS); ``splits`` draws the forget, retain
and test sets of a scenario and the epoch orders, as pure functions of the
seed. NumPy only: the command line reads the names without importing JAX.

Imports: nothing of oeu_jax but :mod:`oeu_jax.defaults`.
"""

from oeu_jax.data.datasets import DATASETS
from oeu_jax.data.datasets import Dataset
from oeu_jax.data.datasets import load_dataset
from oeu_jax.data.datasets import validate_arrays
from oeu_jax.data.splits import RATIO_SCENARIOS
from oeu_jax.data.splits import SCENARIOS
from oeu_jax.data.splits import Split
from oeu_jax.data.splits import epoch_order
from oeu_jax.data.splits import make_split
from oeu_jax.data.splits import mia_shadow_indices
from oeu_jax.data.splits import training_labels

__all__ = (
    "DATASETS",
    "Dataset",
    "RATIO_SCENARIOS",
    "SCENARIOS",
    "Split",
    "epoch_order",
    "load_dataset",
    "make_split",
    "mia_shadow_indices",
    "training_labels",
    "validate_arrays",
)
