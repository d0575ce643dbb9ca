"""The one exception type for problems a user can fix.

Anything raised as :class:`StnError` is bad input or a missing resource (an
archive, a checkpoint, an option value). The CLI prints its message on one line
and exits with code 2; it is a ValueError for library users.
"""


class StnError(ValueError):
    """A user-facing error: the message names the file or value at fault.

    ``cli`` is the message for the command line where the hint differs (an option
    rather than a Python argument); the CLI prints ``error.cli``.
    """

    def __init__(self, message: str, cli: str | None = None):
        super().__init__(message)
        self.cli = cli or message
