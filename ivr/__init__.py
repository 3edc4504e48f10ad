"""Hotline citizen-call handling: FastAGI IVR for 12301 and 12365."""
