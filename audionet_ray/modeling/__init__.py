"""The networks: AudioNet and ModelConfig, the only declaration of a model's settings (model),
architectures by name (registry), what a model costs to run (costs). Imports core."""
