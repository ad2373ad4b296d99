"""Training recipe, optimizer and schedule, checkpoints."""
