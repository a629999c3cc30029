"""Waiting on a session: the waiter's work as steps (step.py), and what they share with their runners."""
