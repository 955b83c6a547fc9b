"""Test doubles shared across the suite (the closest fakes that still exercise our code)."""
