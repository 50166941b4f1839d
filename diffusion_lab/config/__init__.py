"""Configuration: where the configs are, composing them, the folder names they use, and the
checks that run before anything is built (one line naming key, value and what is allowed)."""
