"""Faithful fake servers that tests run real clients against."""
