"""Webhook subscriptions and their deliveries (`/webhooks`; not in Blnk, which has one URL).

- POST `/webhooks` `{url, event_types: [..] or "*", description?, active?}`: 201, the
  subscription plus its `secret` (shown this once).
- GET `/webhooks`: 200 `[subscription]`. GET `/webhooks/{id}`: 200; 404 WHK_NOT_FOUND.
- PATCH `/webhooks/{id}` with any of `url, event_types, description, active`: 200.
- DELETE `/webhooks/{id}`: 200 `{"message": ...}`; its deliveries go with it.
- GET `/webhooks/{id}/deliveries?status=pending|delivered|dead&limit&offset`: 200
  `[delivery]` newest first, each with `status`, `attempts`, `last_error`, `last_status_code`.
- POST `/webhooks/{id}/deliveries/{delivery_id}/redrive`: 200, the dead delivery pending
  again; 409 WHK_DELIVERY_NOT_DEAD unless it was dead.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ledger import webhooks, webhooks_repository
from ledger.endpoints.common import LedgerDeps, json_response, json_schema_body, page, read_json
from ledger.webhooks import (
    DELIVERIES_PAGE_MAX,
    SUBSCRIPTIONS_LIST_MAX,
    DeliveryNotDeadError,
    DeliveryNotFoundError,
    WebhookNotFoundError,
    WebhookValidationError,
    delivery_json,
    subscription_json,
)

DELIVERY_STATUSES: Final = frozenset({"pending", "delivered", "dead"})
DELIVERIES_PAGE_DEFAULT: Final = 20


def webhooks_router(deps: LedgerDeps) -> APIRouter:
    """Webhook subscription routes."""
    router = APIRouter(tags=["webhooks"])
    errors: dict[int | str, dict[str, Any]] = {
        400: {"description": WebhookValidationError.code},
        404: {"description": f"{WebhookNotFoundError.code}, {DeliveryNotFoundError.code}"},
        409: {"description": DeliveryNotDeadError.code},
    }

    @router.post(
        "/webhooks",
        status_code=201,
        responses=errors,
        summary="Subscribe to events",
        openapi_extra=json_schema_body(webhooks.subscription_schema(is_update=False)),
    )
    async def create(request: Request) -> Response:
        body = await read_json(request)
        async with deps.db.transaction() as conn:
            created = await webhooks.create_subscription(
                conn, body, now=deps.clock.now(), cipher=deps.cipher
            )
        return json_response(created, 201)

    @router.get("/webhooks", responses=errors, summary="List webhook subscriptions")
    async def listing() -> Response:
        async with deps.db.connection() as conn:
            found = await webhooks_repository.list_subscriptions(conn, limit=SUBSCRIPTIONS_LIST_MAX)
        return json_response([subscription_json(s) for s in found])

    @router.get(
        "/webhooks/{subscription_id}", responses=errors, summary="Get a webhook subscription"
    )
    async def get(subscription_id: str) -> Response:
        async with deps.db.connection() as conn:
            found = await webhooks.get_subscription(conn, subscription_id)
        return json_response(subscription_json(found))

    @router.patch(
        "/webhooks/{subscription_id}",
        responses=errors,
        summary="Change a webhook subscription",
        openapi_extra=json_schema_body(webhooks.subscription_schema(is_update=True)),
    )
    async def update(subscription_id: str, request: Request) -> Response:
        body = await read_json(request)
        async with deps.db.transaction() as conn:
            changed = await webhooks.update_subscription(
                conn, subscription_id, body, now=deps.clock.now()
            )
        return json_response(subscription_json(changed))

    @router.delete(
        "/webhooks/{subscription_id}", responses=errors, summary="Delete a webhook subscription"
    )
    async def delete(subscription_id: str) -> Response:
        async with deps.db.transaction() as conn:
            await webhooks.delete_subscription(conn, subscription_id)
        return json_response({"message": "webhook subscription deleted successfully"})

    @router.get(
        "/webhooks/{subscription_id}/deliveries",
        responses=errors,
        summary="A subscription's deliveries",
    )
    async def deliveries(subscription_id: str, request: Request) -> Response:
        status = request.query_params.get("status")
        if status is not None and status not in DELIVERY_STATUSES:
            raise WebhookValidationError("status must be pending, delivered or dead")
        limit, offset = page(request, default_limit=DELIVERIES_PAGE_DEFAULT, lenient=False)
        async with deps.db.connection() as conn:
            await webhooks.get_subscription(conn, subscription_id)
            found = await webhooks_repository.list_deliveries(
                conn,
                subscription_id,
                status=status,
                limit=min(limit, DELIVERIES_PAGE_MAX),
                offset=offset,
            )
        return json_response([delivery_json(d) for d in found])

    @router.post(
        "/webhooks/{subscription_id}/deliveries/{delivery_id}/redrive",
        responses=errors,
        summary="Send a dead delivery again",
    )
    async def redrive(subscription_id: str, delivery_id: int) -> Response:
        async with deps.db.transaction() as conn:
            redriven = await webhooks.redrive_delivery(
                conn, subscription_id, delivery_id, now=deps.clock.now()
            )
        return json_response(delivery_json(redriven))

    return router
