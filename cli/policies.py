"""Every policy file of the platform, checked before ``./hotline up`` starts anything.

Each module that reads a policy registers it with its check (``core.policy.register``); importing
them all here makes the registry complete, so ``check`` sees every file a service will read.
"""

from __future__ import annotations

import agent_desk.alerts  # noqa: F401 - [alerts] of hotline.toml
import agent_desk.knowledge  # noqa: F401 - config/phrases.yaml
import ivr.menu  # noqa: F401 - config/menus/*.yaml, config/knowledge.yaml
import ivr.setup  # noqa: F401 - config/prompts.yaml
import quality.evaluation  # noqa: F401 - config/evaluation.yaml
import tickets.deadlines  # noqa: F401 - config/deadlines/*.yaml
import tickets.dispatch  # noqa: F401 - config/units.yaml, config/categories.yaml
import tickets.notices  # noqa: F401 - config/notices.yaml
import tickets.return_visits  # noqa: F401 - [return_visits] of hotline.toml
import tickets.risk  # noqa: F401 - config/risk-rules.yaml
import tickets.rules  # noqa: F401 - config/rules.yaml
from core.policy import validate_all
from core.settings import Settings


def check(settings: Settings) -> list[str]:
    """Validate every policy file; raises core.policy.PolicyErrors naming each file, line and reason."""
    return validate_all(settings)
