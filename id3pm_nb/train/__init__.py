"Training on a GPU or a CPU: the fastai Learner loop, logs, checkpoints, time budgets and the SR stage."
