"Training on a GPU or a CPU: the fastai Learner loop, logs, checkpoints, time budgets and the SR stage."
# `train.budget` patches `fit_iters` onto the Learner, and `DiffusionLearner.resume` replays a recorded
# `fit_iters` call: loading it with the package keeps `resume` working for whoever imports `train.learner` alone.
from . import budget  # noqa: F401
