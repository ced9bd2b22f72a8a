"""Automatic response: playbooks turn monitor and detector firings into incidents and ordered actions.

    books = bn.respond.load_playbooks("guard.yaml")
    state = bn.respond.ResponseState("sqlite:///bastion-registry/registry.db")
    responder = bn.respond.Responder(books, state, send_alert=webhooks.send, rollback_model=registry.rollback)
    responder.fire("boundary", model="digits")          # -> incident ids; actions recorded on each
    bn.respond.resolve(state, incident_id)               # lifts the routes, offline modes and throttles it set
"""

from bastion.respond.playbook import (
    ACTIONS,
    Action,
    Event,
    Matcher,
    Playbook,
    load_playbooks,
    parse_playbooks,
)
from bastion.respond.responder import Responder, resolve
from bastion.respond.state import ResponseState

__all__ = [
    "ACTIONS",
    "Action",
    "Event",
    "Matcher",
    "Playbook",
    "Responder",
    "ResponseState",
    "load_playbooks",
    "parse_playbooks",
    "resolve",
]
