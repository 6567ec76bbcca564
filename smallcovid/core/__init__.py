"""Vocabulary every stage shares: error types, lesion and metric names, safe file writes."""
