"""audionet-ray: hyperparameter search for AudioNet keyword spotting on Ray."""

__version__ = "0.1.0"
