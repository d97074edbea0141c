"""The training harness every learned model shares (``slam-train``, ``slam-eval-model``).

Models supply network, batches, loss and evaluation (:class:`~nets.train.trainable.TrainableModel`);
:func:`~nets.train.loop.train` does the rest. Data: :mod:`nets.train.data`.
"""

from nets.train.trainable import SIZES, TrainableModel

__all__ = ["SIZES", "TrainableModel"]
