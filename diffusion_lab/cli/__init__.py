"""The command-line layer: Hydra and argparse entry points, one-line user errors, the check of
a command line before Hydra runs it, and the record of a sweep's failed jobs."""
