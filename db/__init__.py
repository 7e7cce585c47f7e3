"""Persistence floor: SQLAlchemy 2.0 models and repository functions. Imports nothing from synthct."""
