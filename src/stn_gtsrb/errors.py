"""The one exception type for problems a user can fix.

Anything raised as :class:`StnError` is bad input or a missing resource (an
archive, a checkpoint, an option value). The CLI prints its message on one line
and exits with code 2; it is a ValueError for library users.
"""


class StnError(ValueError):
    """A user-facing error: the message names the file or value at fault."""
