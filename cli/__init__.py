"""The command line: one module per subcommand, dispatched by ``finextract.__main__``."""
