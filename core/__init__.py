"""Shared foundation: settings, database, events and logging used by every service."""
