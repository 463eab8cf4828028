"""The errors a user's input can raise, in a module that imports nothing: looking up a
checkpoint or an experiment folder should not load torch to be able to say what is wrong."""


class ConfigError(ValueError):
    """A bad setting; the message names it, in one line."""
