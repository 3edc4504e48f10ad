"""The shared vocabulary: agent states, pause reasons and channel-variable names have one source.

Pure checks over the source tree (no stack): the desk's JS names only states the enum has, and Python
service code compares agent states and names channel variables through the constants only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.telephony import AMI_CHANNELVARS, ChanVar, call_id_of, chan_var
from core.vocabulary import SELECTABLE_PAUSE_REASONS, AgentState, PauseReason, js_vocabulary

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "agent_desk" / "static"
SERVICE_PACKAGES = ("core", "cli", "ivr", "cti", "agent_desk", "recordings", "tickets", "bench")


def _service_files() -> list[Path]:
    return [p for pkg in SERVICE_PACKAGES for p in (ROOT / pkg).rglob("*.py")]


def test_js_names_only_states_the_enum_has() -> None:
    names = {"AgentState": {s.name for s in AgentState}, "PauseReason": {r.name for r in PauseReason}}
    used: list[tuple[str, str, str]] = []
    bare: list[str] = []
    for js in STATIC.glob("*.js"):
        text = js.read_text(encoding="utf-8")
        used += [(js.name, kind, name) for kind, name in re.findall(r"\b(AgentState|PauseReason)\.([A-Z_]+)", text)]
        # An agent's state or reason (the ``.state``/``.reason`` of a session or event) compared against a
        # string literal instead of the shared constants.
        bare += [f"{js.name}: {m}" for m in re.findall(r"""\.(?:state|reason)\s*[!=]==?\s*["'][^"']*["']""", text)]
    assert used, "the desk's JS is expected to use Desk.AgentState"
    unknown = [u for u in used if u[2] not in names[u[1]]]
    assert not unknown, f"JS uses names the enums lack: {unknown}"
    assert not bare, f"JS compares a state with a bare literal: {bare}"


def test_js_vocabulary_is_the_enums() -> None:
    vocab = json.loads(json.dumps(js_vocabulary()))  # what base.html renders
    assert vocab["AgentState"] == {s.name: s.value for s in AgentState}
    assert vocab["stateLabels"]["on_call"] == "通话中"
    assert vocab["reasonLabels"]["login"] == "签入后"
    # The platform's own reasons are never offered on the desk.
    assert "login" not in SELECTABLE_PAUSE_REASONS and "callback" not in SELECTABLE_PAUSE_REASONS
    assert list(SELECTABLE_PAUSE_REASONS) == ["break", "training", "acw", "meeting", "meal"]


# `.get("state") == "ready"`, `set_agent_state(redis, id, "paused"` ...: an agent state as a bare literal.
STATES = "|".join(s.value for s in AgentState)
STATE_LITERAL = re.compile(
    r"""(?:\.get\(["']state["'][^)]*\)\s*(?:==|!=|in)\s*\(?|set_agent_state\([^,]+,[^,]+,\s*)"""
    rf"""["']({STATES})["']""")
CHANVARS = "|".join((*AMI_CHANNELVARS, ChanVar.IVR_ROUTE, ChanVar.IVR_AHEAD, ChanVar.CALLBACK_ID, ChanVar.SPY_TARGET))
CHANVAR_LITERAL = re.compile(rf"""["'](?:__)?({CHANVARS})["']""")


@pytest.mark.parametrize("pattern,home", [(STATE_LITERAL, "core/vocabulary.py"),
                                          (CHANVAR_LITERAL, "core/telephony.py")], ids=["agent-states", "chanvars"])
def test_service_code_uses_the_constants(pattern: re.Pattern, home: str) -> None:
    found = []
    for path in _service_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel == home:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert not found, "bare literals instead of the shared constants:\n" + "\n".join(found)


def test_call_id_of_falls_back_to_the_uniqueid() -> None:
    event = {"ChanVariable": ["HOTLINE=12301", "CALL_ID=1700000000.5"], "Uniqueid": "1700000000.9"}
    assert call_id_of(event) == "1700000000.5"
    assert chan_var(event, ChanVar.HOTLINE) == "12301"
    assert call_id_of({"ChanVariable": "HOTLINE=12301", "Uniqueid": "1700000000.9"}) == "1700000000.9"
    assert chan_var({"ChanVariable-CALL_ID": "x"}, ChanVar.CALL_ID) == "x"
