"""The study index: patient / study / series / instance, on SQLite or PostgreSQL."""
