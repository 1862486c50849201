"""Guarded changes of the active system and what watches them."""
