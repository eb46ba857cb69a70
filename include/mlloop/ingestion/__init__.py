"""Landing, validating, quarantining and publishing source batches."""
