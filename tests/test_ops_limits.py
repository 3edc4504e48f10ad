"""Log rotation sizes from [logs] and the low-disk check of ./hotline status ([disk])."""

from __future__ import annotations

import re

from cli.stack import supervisord_conf
from core.asterisk_runtime import resolve_runtime
from core.disk import disk_space
from core.settings import load_settings


def test_every_service_log_and_supervisords_own_rotate_at_the_configured_size(tmp_path):
    settings = load_settings(tmp_path, env={"HOTLINE_LOGS_MAX_MB": "5", "HOTLINE_LOGS_BACKUPS": "7"})
    conf = supervisord_conf(settings, resolve_runtime(settings))
    sections = re.split(r"^\[", conf, flags=re.M)
    programs = [s for s in sections if s.startswith("program:")]
    assert len(programs) >= 6  # Asterisk, Redis and the Python services
    for section in programs:
        assert "stdout_logfile_maxbytes=5MB\n" in section and "stdout_logfile_backups=7\n" in section, section
    (main,) = [s for s in sections if s.startswith("supervisord]")]
    assert "logfile_maxbytes=5MB\n" in main and "logfile_backups=7\n" in main


def test_a_file_system_below_the_configured_free_space_is_reported_low(tmp_path):
    roomy = disk_space(load_settings(tmp_path, env={"HOTLINE_DISK_MIN_FREE_MB": "0",
                                                    "HOTLINE_DISK_MIN_FREE_PERCENT": "0"}))
    assert roomy and not any(d.low for d in roomy)
    assert "recordings" in roomy[0].what and "var" in " ".join(d.what for d in roomy)
    free_mb = roomy[0].free_mb
    # The same disk with a threshold above what it has free: low, by megabytes or by percent.
    for env in ({"HOTLINE_DISK_MIN_FREE_MB": str(free_mb + 1), "HOTLINE_DISK_MIN_FREE_PERCENT": "0"},
                {"HOTLINE_DISK_MIN_FREE_MB": "0", "HOTLINE_DISK_MIN_FREE_PERCENT": "100"}):
        low = disk_space(load_settings(tmp_path, env=env))
        assert all(d.low for d in low) and "LOW" in low[0].detail


def test_a_rotated_book_keeps_the_configured_number_of_older_files(tmp_path):
    """core.logrotate's renaming: name.1 is the newest, nothing beyond ``backups`` is kept."""
    from core.logrotate import rotate_file, rotated

    book = tmp_path / "queue_log"
    for generation in range(5):
        book.write_text(f"generation {generation}\n")
        rotate_file(book, 3)
    assert not book.exists()
    assert [rotated(book, n).read_text() for n in (1, 2, 3)] == [f"generation {g}\n" for g in (4, 3, 2)]
    assert not rotated(book, 4).exists()
