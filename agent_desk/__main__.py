from agent_desk.app import main
from core.service import run_service

run_service("agent_desk", main)
