"""The command line: one module per subcommand, dispatched by ``finextract.__main__``."""


class UsageError(ValueError):
    """A problem with what the user asked for (arguments, files): printed as the message alone,
    without a traceback, and the command exits with status 2 (``--debug`` shows the traceback)."""
