"""Pydantic models of every payload that crosses a process boundary."""
