"""The actors: each owns its inbox and its tasks, and talks only through messages."""
