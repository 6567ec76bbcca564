"""The training engine: config, the per-fold loop, cross-validation summary,
resumable state, and the job table that runs trainings as separate processes."""
