"""Trainers: ``ssl`` (views -> encoder -> loss -> step) and ``linear_eval`` (frozen features)."""
