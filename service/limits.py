"""Request body limit, enforced before any form parsing touches the disk or memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import send_error


class BodyLimitMiddleware:
    """413 when Content-Length exceeds the limit, or when a streamed body grows past it.

    A streamed body that crosses the limit is cut off (the app sees a disconnect) and whatever
    the app answers to that is replaced by the 413, so the client always learns which limit it hit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await send_error(send, 400, "invalid_content_length", "Content-Length is not a number", close=True)
                return
            if too_big:
                await self._reject_too_large(send)
                return
        state = {"received": 0, "exceeded": False, "started": False}

        async def counting_receive() -> Message:
            if state["exceeded"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["exceeded"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["exceeded"]:
                return  # the 413 below replaces the app's answer to the cut-off body
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["exceeded"]:
                raise
        if state["exceeded"] and not state["started"]:
            await self._reject_too_large(send)

    async def _reject_too_large(self, send: Send) -> None:
        await send_error(send, 413, "upload_too_large",
                         f"request body is over the limit of {self.max_bytes} bytes (LIKENESS_MAX_UPLOAD_BYTES)",
                         close=True)
