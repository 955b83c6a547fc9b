"""The ``smoothguard`` subcommands, one module each; ``smoothguard.cli`` imports them lazily."""
