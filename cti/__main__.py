from core.service import run_service
from cti.service import main

run_service("cti", main)
