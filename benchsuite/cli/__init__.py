"""The command line: typer commands, their shared options, the CLI's rich tables."""
