"""Fault injection: named points in the code that can be armed to raise, crash or delay."""
