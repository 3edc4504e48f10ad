from core.asterisk_runtime import node_runtimes, resolve_runtime
from core.db import Database
from core.metrics import on_scrape
from core.service import run_service
from recordings.figures import recordings_figures
from recordings.worker import main


async def main_with_figures(settings, stop) -> None:
    """The worker, plus its figures for the metrics endpoint (read from its spools and the database)."""
    db = Database(settings.database_url)
    runtimes = node_runtimes(settings, resolve_runtime(settings))
    on_scrape(lambda: recordings_figures(db, runtimes, settings.recordings.spool_grace_seconds))
    try:
        await main(settings, stop)
    finally:
        await db.close()


run_service("recordings", main_with_figures)
