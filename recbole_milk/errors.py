"""The one family of user-facing errors: bad options, bad data, unknown models, unusable checkpoints or inputs.

Each message names the option, file or field at fault and says how to fix it. Entry points print these as one line
on stderr and exit with status 2 (recbole_milk.cli); anything else is a bug and keeps its traceback.
"""


class UserInputError(ValueError):
    """Input the plugin cannot work with; the message says which and how to fix it."""


class ConfigError(UserInputError):
    """An option has a value the plugin cannot run with; the message names the key and the allowed values."""


class DataError(UserInputError):
    """The dataset files or the options that point at them cannot be used; the message names the file and the fix."""


class UnknownModelError(UserInputError):
    """A model name that neither the plugin nor RecBole defines."""
