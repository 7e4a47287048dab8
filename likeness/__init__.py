"""The ``likeness`` command: one entry point for the service, the index jobs and training (see cli.py)."""
