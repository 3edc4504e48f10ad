"""Command line: ./hotline up | down | status | test | call."""
