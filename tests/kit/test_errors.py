"""The error tree: every class pickles (Ray ships errors between processes) and keeps its shape."""

from __future__ import annotations

import importlib
import pickle
import pkgutil

import pytest

from kit.errors import (
    AppError,
    ConflictError,
    DependencyError,
    DomainError,
    InvariantError,
    check_invariant,
    fail_invariant,
    iter_error_classes,
)

OUR_PACKAGES = ("kit", "ledger", "users", "auth", "compliance", "wallets", "gateway")


def _import_everything() -> None:
    for name in OUR_PACKAGES:
        package = importlib.import_module(name)
        for module in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            importlib.import_module(module.name)


_import_everything()
ALL_ERRORS = iter_error_classes()


class TestPickling:
    @pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: f"{c.__module__}.{c.__name__}")
    def test_every_error_class_round_trips(self, cls: type[AppError]) -> None:
        """Every AppError subclass survives pickling with its code, message and details."""
        error = cls("something happened", balance_id="bln_1", amount=10)
        restored = pickle.loads(pickle.dumps(error))
        assert type(restored) is cls
        assert restored.code == cls.code
        assert restored.status == cls.status
        assert restored.message == "something happened"
        assert restored.details == {"balance_id": "bln_1", "amount": 10}
        assert str(restored) == "something happened"

    def test_body_variant_set_on_an_instance_survives(self) -> None:
        """A body variant chosen where an error is raised survives pickling and `with_details`;
        an error without one still has none after the round trip."""
        error = ConflictError("taken")
        error.body_variant = "errors"
        assert pickle.loads(pickle.dumps(error)).body_variant == "errors"
        assert error.with_details(index=1).body_variant == "errors"
        assert pickle.loads(pickle.dumps(ConflictError())).body_variant is None

    def test_the_tree_is_discovered(self) -> None:
        """The discovery walks the whole tree, so the parametrised test covers new classes."""
        names = {cls.__name__ for cls in ALL_ERRORS}
        assert {"AppError", "DomainError", "DependencyError", "InvariantError"} <= names
        assert len(ALL_ERRORS) >= 15

    def test_default_message_is_used_when_none_given(self) -> None:
        """Errors raised without a message carry their class's default message."""
        restored = pickle.loads(pickle.dumps(ConflictError()))
        assert restored.message == ConflictError.default_message


class TestShape:
    def test_codes_are_screaming_snake_and_mean_one_status(self) -> None:
        """Every code is SCREAMING_SNAKE with a prefix, and one code always means one status.

        Blnk's wire codes are shared by several situations (GEN_MALFORMED_REQUEST, say), so a
        code may be defined by more than one class, but a client keying off it must always see
        the same HTTP status.
        """
        statuses: dict[str, set[int]] = {}
        for cls in ALL_ERRORS:
            statuses.setdefault(cls.code, set()).add(cls.status)
        assert {code: s for code, s in statuses.items() if len(s) > 1} == {}
        for code in statuses:
            prefix, _, rest = code.partition("_")
            assert prefix.isupper()
            assert rest
            assert code.upper() == code

    def test_domain_errors_are_4xx_and_dependency_errors_503(self) -> None:
        """Expected outcomes are client errors; unavailable dependencies are 503."""
        for cls in ALL_ERRORS:
            if issubclass(cls, DomainError):
                assert 400 <= cls.status < 500, cls
            if issubclass(cls, DependencyError):
                assert cls.status == 503, cls

    def test_invariant_errors_hide_their_detail(self) -> None:
        """A client never reads an invariant's message or details."""
        error = InvariantError("balance 42 is negative", balance_id="bln_42")
        assert "42" not in error.public_message
        assert error.public_details == {}
        assert error.message == "balance 42 is negative"

    def test_with_details_copies(self) -> None:
        """with_details adds details without touching the original."""
        error = ConflictError("dup", reference="r1")
        more = error.with_details(existing_id="txn_1")
        assert more.details == {"reference": "r1", "existing_id": "txn_1"}
        assert error.details == {"reference": "r1"}


class TestInvariants:
    def test_check_invariant_passes_silently(self) -> None:
        """A true condition raises nothing."""
        check_invariant(1 + 1 == 2, "arithmetic")

    def test_check_invariant_raises_with_details(self) -> None:
        """A false condition raises InvariantError carrying the details."""
        with pytest.raises(InvariantError) as caught:
            check_invariant(False, "sum is not zero", currency="USD", total=5)
        assert caught.value.details == {"currency": "USD", "total": 5}

    def test_fail_invariant_always_raises(self) -> None:
        """fail_invariant marks unreachable branches."""
        with pytest.raises(InvariantError, match="unreachable"):
            fail_invariant("unreachable")
