"""The coordinator: scheduler (pure state machine), server (asyncio I/O), submit (the job's life)."""
