"""``python -m ivr``: the FastAGI IVR server, run by the supervisor."""

from core.service import run_service
from ivr.server import serve

run_service("ivr", serve)
