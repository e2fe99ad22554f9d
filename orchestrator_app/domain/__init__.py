"""The domain core: state machine, money, validation, records, the saga step. No I/O."""

from . import codec, money, records, saga, state_machine, validation
from .records import Command, CommandKind, Payment, PaymentCreated, PaymentStateChanged
from .saga import Outcome, SagaPolicy, Status, apply
from .state_machine import InvalidTransition, State, Trigger, next_state
from .validation import Invalid, validate_created

__all__ = [
    "Command",
    "CommandKind",
    "Invalid",
    "InvalidTransition",
    "Outcome",
    "Payment",
    "PaymentCreated",
    "PaymentStateChanged",
    "SagaPolicy",
    "State",
    "Status",
    "Trigger",
    "apply",
    "codec",
    "money",
    "next_state",
    "records",
    "saga",
    "state_machine",
    "validate_created",
    "validation",
]
