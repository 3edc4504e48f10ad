from core.service import run_service
from recordings.worker import main

run_service("recordings", main)
