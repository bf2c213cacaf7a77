"""One exception tree: every phe-fl error is a PheFlError and the natural built-in."""

from __future__ import annotations

import pytest

from phe_fl import errors
from phe_fl.errors import (
    CryptoError,
    KeyMismatchError,
    LevelError,
    ParameterError,
    PartySetError,
    PheFlError,
    ProtocolError,
    SerializationError,
)


@pytest.mark.parametrize(
    "cls, builtin",
    [
        (ParameterError, ValueError),
        (SerializationError, ValueError),
        (ProtocolError, ValueError),
        (KeyMismatchError, ValueError),
        (PartySetError, ValueError),
        (LevelError, ValueError),
        (CryptoError, RuntimeError),
    ],
)
def test_every_error_is_a_phe_fl_error_and_its_builtin(cls, builtin):
    assert issubclass(cls, PheFlError)
    assert issubclass(cls, builtin)
    with pytest.raises(PheFlError):
        raise cls("x")
    with pytest.raises(builtin):
        raise cls("x")


def test_key_mismatch_and_party_set_errors_are_protocol_errors():
    assert issubclass(KeyMismatchError, ProtocolError)
    assert issubclass(PartySetError, ProtocolError)
    assert not issubclass(PartySetError, KeyMismatchError)


def test_all_lists_exactly_the_tree():
    exported = {getattr(errors, name) for name in errors.__all__}
    defined = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, PheFlError)
    }
    assert exported == defined
