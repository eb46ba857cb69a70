"""Local operations: start/stop the embedded default stack and drive the demo."""
