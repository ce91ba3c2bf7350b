"""``dlsetup plan``: resolve a host profile and a request into a stack that fits, and say why."""

from dlsetup.plan.planner import Decision, Plan, PlanConflict, make_plan
from dlsetup.plan.request import Request, load_request

__all__ = ["Decision", "Plan", "PlanConflict", "Request", "load_request", "make_plan"]
