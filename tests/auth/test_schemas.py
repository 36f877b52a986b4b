"""The identity API's request bodies: what every one of them refuses before a handler runs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from auth.schemas import ClientIn, RegisterIn, WebAuthnRegisterIn


class TestNulCharacter:
    """Every request body model refuses text with U+0000, which PostgreSQL cannot store."""

    @pytest.mark.parametrize(
        ("model", "fields"),
        [
            (WebAuthnRegisterIn, {"credential": {}, "name": "key\x00"}),
            (
                ClientIn,
                {"name": "app", "redirect_uris": ["https://a.example/\x00"], "scopes": ["x"]},
            ),
            (RegisterIn, {"email": "a@example.com", "password": "pass\x00word-long-enough"}),
        ],
    )
    def test_refused(self, model: type[BaseModel], fields: dict[str, Any]) -> None:
        with pytest.raises(ValidationError, match="U\\+0000"):
            model.model_validate(fields)

    def test_other_text_passes(self) -> None:
        body = ClientIn.model_validate(
            {
                "name": "app \\u0000 literal",
                "redirect_uris": ["https://a.example/cb"],
                "scopes": ["x"],
            }
        )
        assert body.name == "app \\u0000 literal"
