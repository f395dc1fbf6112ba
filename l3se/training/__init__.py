"""The training engine every l3se stage uses: a stage is a ``Task`` (its modules and how a batch
becomes losses) handed to ``Trainer`` with the shared ``TrainConfig``/``OptimConfig``."""
