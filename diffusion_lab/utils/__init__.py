"""What every layer may use: user-facing errors, atomic and locked file writing, progress."""
