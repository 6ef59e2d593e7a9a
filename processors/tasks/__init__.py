"""LLM tasks: build prompt -> parse (never raises) -> score. Classification and sentiment are label tasks."""
