"""aiosctl, the command line for daily operations."""
