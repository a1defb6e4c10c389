"""Runnable examples of using the pipeline from a host application."""
