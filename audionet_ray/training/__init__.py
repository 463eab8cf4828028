"""One training run: the settings' schema (schema: options, checks and flat keys from the
dataclasses), the settings (config), the checkpoint format (checkpoint), the loop and the
TorchTrainer (train), Tune's trial process as a trainer (trial_process), resource monitoring
(monitor). Imports detection and the stages below it."""
