"""The commands: the demo job, the training commands (id3pm_prepare, id3pm_train, ...) and the use commands
(id3pm_sample, id3pm_eval), which import no training code."""
