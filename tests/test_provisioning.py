"""Phones and queues in the database (issue 17 items 1-2), on SQLite and PostgreSQL, and the Asterisk files
rendered from them. The reload on a running Asterisk: tests/cti/test_provisioning_live.py."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete

from core import admin_audit, provisioning
from core.asterisk_config import render_asterisk_config
from core.asterisk_runtime import AsteriskRuntime
from core.db import Database
from core.provisioning import HotlineQueue, Phone, ProvisioningError
from core.settings import load_settings


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    async with database.transaction() as session:
        await session.execute(delete(Phone))
        await session.execute(delete(HotlineQueue))
    yield database
    # Leave the tables empty as found: later tests of the session on this database (accounts, default
    # extensions) go by the shipped phones while nothing is seeded, not by this test's 8077 or disabled 8003.
    async with database.transaction() as session:
        await session.execute(delete(Phone))
        await session.execute(delete(HotlineQueue))
    await database.close()


@pytest.fixture
def settings(tmp_path):
    return load_settings(var_dir=tmp_path / "var", env={"HOTLINE_QUEUES_RING_SECONDS": "17"})


async def test_seed_brings_the_configured_phones_and_eight_queues_and_keeps_what_an_admin_changed(db, settings):
    await provisioning.seed(db, settings)
    telephony = await provisioning.load(db)
    assert [p.extension for p in telephony.phones] == ["8001", "8002", "8003", "8004", "8005", "8101"]
    assert {p.kind for p in telephony.phones if p.extension == "8101"} == {"lead"}
    # The configured password (var/secrets.toml) works against the stored digest credential.
    assert telephony.phones[0].md5_cred == provisioning.md5_cred("8001", settings.sip_password("8001"))
    assert [q.name for q in telephony.queues] == sorted(f"{h}-{b}" for h in ("12301", "12365")
                                                        for b in ("general", "consult", "complaint", "report"))
    assert {(q.ring_seconds, q.max_wait_seconds, q.strategy) for q in telephony.queues} == \
        {(17, settings.queues.max_wait_seconds, "rrmemory")}
    await provisioning.update_queue(db, "12301-general", {"ring_seconds": "25"})
    await provisioning.update_phone(db, "8002", {"enabled": False})
    await provisioning.seed(db, settings)  # a second `./hotline up`
    again = await provisioning.load(db)
    assert len(again.phones) == 6 and len(again.queues) == 8
    assert next(q for q in again.queues if q.name == "12301-general").ring_seconds == 25
    assert not next(p for p in again.phones if p.extension == "8002").enabled


async def test_a_new_phone_gets_a_password_shown_once_and_stored_only_as_its_digest(db):
    phone, password = await provisioning.create_phone(db, {"extension": "8050", "label": "坐席 50", "kind": "agent"})
    assert len(password) == 12 and password not in repr(await provisioning.load(db))
    assert phone.md5_cred == provisioning.md5_cred("8050", password)
    assert "md5_cred" not in phone.public()
    renewed = await provisioning.regenerate_password(db, "8050")
    assert renewed != password
    assert (await provisioning.list_phones(db, "坐席 50"))[0].md5_cred == provisioning.md5_cred("8050", renewed)
    assert await provisioning.enabled_extensions(db) == ["8050"]
    await provisioning.update_phone(db, "8050", {"enabled": "false"})
    assert await provisioning.enabled_extensions(db) == []
    # Each change is in the admin audit log, the password never.
    _total, rows = await admin_audit.search(db, admin_audit.AuditQuery(entity="extension", text="8050"))
    assert [row.action for row in rows[:3]] == ["disable", "reset_password", "create"]
    assert rows[1].before == {"password": admin_audit.REDACTED} == rows[1].after
    assert rows[2].after["password"] == admin_audit.REDACTED and rows[2].after["label"] == "坐席 50"
    assert password not in repr([(r.before, r.after) for r in rows]) and renewed not in repr(rows[1].after)


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"extension": "801", "label": "x"}, "extension", "8 开头的 4 位数字"),
    ({"extension": "9001", "label": "x"}, "extension", "8 开头的 4 位数字"),
    ({"extension": "8060", "label": " "}, "label", "请填写名称"),
    ({"extension": "8060", "label": "x", "kind": "boss"}, "kind", "话机类型"),
])
async def test_a_bad_phone_is_refused_in_words_and_nothing_is_written(db, data, field, words):
    with pytest.raises(ProvisioningError) as refused:
        await provisioning.create_phone(db, data)
    assert refused.value.field == field and words in refused.value.message and refused.value.status == 400
    assert await provisioning.list_phones(db) == []


async def test_queues_are_created_validated_and_a_duplicate_is_a_conflict(db):
    data = {"hotline": "12301", "business": "tourism", "strategy": "ringall", "ring_seconds": 12,
            "max_wait_seconds": 90, "announce_every_seconds": 20, "wrapup_seconds": 3, "music_class": "default"}
    queue = await provisioning.create_queue(db, data)
    assert queue.name == "12301-tourism" and queue.enabled
    with pytest.raises(ProvisioningError) as duplicate:
        await provisioning.create_queue(db, data)
    assert duplicate.value.status == 409 and duplicate.value.field == "name"
    for bad, field in (({"ring_seconds": "两秒"}, "ring_seconds"), ({"ring_seconds": 1}, "ring_seconds"),
                       ({"strategy": "fastest"}, "strategy"), ({"hotline": "110"}, "hotline"),
                       ({"music_class": "a b"}, "music_class")):
        with pytest.raises(ProvisioningError) as refused:
            await provisioning.update_queue(db, "12301-tourism", bad)
        assert refused.value.field == field, bad
    before, after = await provisioning.update_queue(db, "12301-tourism", {"ring_seconds": "30", "enabled": False})
    assert (before.ring_seconds, after.ring_seconds, after.enabled) == (12, 30, False)
    assert [q.name for q in await provisioning.list_queues(db, "tour")] == ["12301-tourism"]
    assert await provisioning.enabled_queue_names(db) == []
    with pytest.raises(ProvisioningError) as linear:
        await provisioning.update_queue(db, "12301-tourism", {"strategy": "linear"})
    assert linear.value.field == "strategy"


async def test_the_rendered_files_carry_the_databases_phones_and_queues(db, settings, tmp_path):
    await provisioning.seed(db, settings)
    await provisioning.create_phone(db, {"extension": "8077", "label": "新坐席", "kind": "agent"})
    await provisioning.update_phone(db, "8003", {"enabled": False})
    await provisioning.update_queue(db, "12365-report", {"ring_seconds": 9, "max_wait_seconds": 300,
                                                         "strategy": "leastrecent", "wrapup_seconds": 7})
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(f"asterisk:x:{os.getuid()}:{os.getgid()}::/:/bin/false\n")
    etc = render_asterisk_config(settings, AsteriskRuntime(root, "t"), telephony=await provisioning.load(db))
    pjsip = (etc / "pjsip.conf").read_text()
    assert "[8077](phone-defaults)" in pjsip and '"新坐席" <8077>' in pjsip
    assert "[8003](phone-defaults)" not in pjsip  # disabled: gone after the reload, it cannot register
    assert "password =" not in pjsip.split("phones --")[1].split("browser phones")[0]
    queues = (etc / "queues.conf").read_text()
    section = queues.split("[12365-report](hotline-queue)")[1].split("\n\n")[0]
    assert {"strategy = leastrecent", "timeout = 9", "wrapuptime = 7"} <= set(section.splitlines())
    dialplan = (etc / "extensions.conf").read_text()
    assert "exten => 12365-report,1,Set(QUEUE_MAX_WAIT=300)" in dialplan
    assert "exten => 8077,hint,PJSIP/8077" in dialplan and "exten => 8003,hint" not in dialplan
    assert oct((etc / "pjsip.conf").stat().st_mode & 0o777) == "0o640"
    assert not list(etc.glob(".*.new"))


def test_up_prints_a_phones_current_password_or_that_an_admin_changed_it(sqlite_url, tmp_path, capsys):
    """`./hotline up` used to print every seeded phone's password of var/secrets.toml, also after an admin had
    re-generated it (so the printed one no longer registered)."""
    import asyncio

    from cli.__main__ import _print_access

    settings = load_settings(var_dir=tmp_path / "var", env={"HOTLINE_DATABASE_URL": sqlite_url})

    async def clear() -> None:
        db = Database(sqlite_url)
        async with db.transaction() as session:
            await session.execute(delete(Phone))
            await session.execute(delete(HotlineQueue))
        await db.close()

    async def prepare() -> str:
        await clear()
        db = Database(sqlite_url)
        try:
            await provisioning.seed(db, settings)
            await provisioning.update_phone(db, "8003", {"enabled": False})
            return await provisioning.regenerate_password(db, "8002")
        finally:
            await db.close()

    renewed = asyncio.run(prepare())
    try:
        _print_access(settings)
    finally:
        asyncio.run(clear())
    lines = {line.split(":")[0].strip(): line for line in capsys.readouterr().out.splitlines() if "phone 8" in line}
    assert f"password {settings.sip_password('8001')}" in lines["phone 8001"]
    assert settings.sip_password("8002") not in lines["phone 8002"] and renewed not in lines["phone 8002"]
    assert "changed by an admin" in lines["phone 8002"]
    assert lines["phone 8003"].endswith("(disabled)") and len(lines) == 6
