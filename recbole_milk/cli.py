"""The one way the plugin's command-line scripts report a user error: one line on stderr, exit status 2."""
import sys
from typing import Any, Callable

from recbole_milk.errors import UserInputError

USER_ERROR_STATUS = 2


def run_cli(main: Callable[[], Any]) -> None:
    """Run a script's main(); a UserInputError (bad option, bad data, unknown model, unusable file) becomes
    `error: <message>` on stderr and exit status 2, without a traceback. Any other exception is a bug and keeps
    its traceback."""
    try:
        result = main()
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)
    if isinstance(result, int) and not isinstance(result, bool):
        sys.exit(result)
