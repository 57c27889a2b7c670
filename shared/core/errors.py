"""The root of every error Mailfiler raises on purpose.

`except MailfilerError` catches what the app itself refuses (a bad contract, a configuration, a
mailbox that cannot be read now, ...) and nothing else: a bug (KeyError, TypeError) stays a bug.
Each error keeps the builtin base its callers already catch, first (`class X(ValueError,
MailfilerError)`), so the root only adds itself just above Exception in the MRO. The tests in
tests/core/test_errors.py check that every exception class in `shared` derives from
`MailfilerError` that way, so a new one cannot slip out.
"""

from __future__ import annotations


class MailfilerError(Exception):
    """An error the app raises on purpose, with a message that says what to fix."""


class ContractError(ValueError, MailfilerError):
    """A queue message that is not a valid contract. Retrying cannot fix it."""
