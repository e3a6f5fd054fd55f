"""The worker: connects, authenticates, pulls tasks, runs the job's map and reduce functions."""
