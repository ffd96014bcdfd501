"""The pure scoring core: plans in, events and time in, state and outputs out.

Drivers (the stream worker, the backtest, the tests) import from here and nowhere deeper.
"""

from streams.models.outputs import Output
from streams.models.plan_file import PlanError, load_plans, parse_plans
from streams.models.plans import PlanSet
from streams.scoring.engine import (
    Outcome,
    Plans,
    Step,
    advance,
    apply,
    contact_view,
    current_score,
    next_deadline,
    plans_for,
    rescore,
    score_event,
)
from streams.scoring.state import ContactState, decode_state, encode_state

__all__ = [
    "ContactState",
    "Outcome",
    "Output",
    "PlanError",
    "PlanSet",
    "Plans",
    "Step",
    "advance",
    "apply",
    "contact_view",
    "current_score",
    "decode_state",
    "encode_state",
    "load_plans",
    "next_deadline",
    "parse_plans",
    "plans_for",
    "rescore",
    "score_event",
]
