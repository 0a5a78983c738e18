"""The server's room: the ServerApp, the round loop over a strategy, SecAgg+'s train phase,
checkpoints, the checks before a run starts, failures that end a run, and its report."""
