"""POST /v1/messages, /v1/messages/count_tokens and /v1/responses: run the request through
the chat pipeline with its translation (bridge.run_chat) and shape the answer in the
endpoint's own format. Errors on /v1/messages are in Anthropic's shape, on /v1/responses in
OpenAI's."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpResponse, JsonResponse

from gateway import tokens
from gateway.auth import authenticate
from gateway.errors import GatewayError, InvalidRequest, error_response
from gateway.inbound import (
    anthropic_messages,
    anthropic_native,
    anthropic_stream,
    bridge,
    responses,
    responses_stream,
)
from gateway.inbound.openapi import count_tokens_doc, messages_doc, responses_doc
from gateway.validation import parse_json
from gateway.views import InlineAPIView, RequestHeaders, json_response, read_body, sse_response


def anthropic_error(error: GatewayError, request_id: str, headers: dict[str, str]) -> HttpResponse:
    body = anthropic_messages.error_body(error, request_id)
    response = JsonResponse(body, status=error.status)
    response["Content-Length"] = str(len(response.content))
    for name, value in {**error.headers, **headers}.items():
        response[name] = value
    return response


def _anthropic_headers(headers: RequestHeaders) -> str | None:
    """Anthropic's API requires `anthropic-version`; so does this endpoint, as every
    Anthropic client sends it. Returns the `anthropic-beta` header, passed through to
    Anthropic-kind models, except a 1M-context beta: it bills long prompts at a higher rate
    than the gateway's price table holds."""
    if not headers.get("anthropic-version"):
        raise InvalidRequest("anthropic-version: header is required.", param="anthropic-version")
    beta = headers.get("anthropic-beta")
    if beta and any(name.strip().startswith("context-1m") for name in beta.split(",")):
        raise anthropic_messages.unsupported(
            "anthropic-beta",
            "the 1M-token context beta bills prompts above 200k tokens at a long-context rate "
            "the gateway's price table does not hold",
        )
    return beta or None


class MessagesView(InlineAPIView):
    """POST /v1/messages: Anthropic's Messages API, JSON or SSE."""

    @messages_doc
    async def post(self, request):
        headers = RequestHeaders(request)

        def translate() -> bridge.Translated:
            beta = _anthropic_headers(headers)
            data = parse_json(read_body(request._request))
            return anthropic_native.passthrough(data, beta)

        answer = await bridge.run_chat(headers=headers, translate=translate, endpoint="messages")
        call = answer.call
        message_id = "msg_" + answer.request_id[4:]
        if answer.error is not None or call is None:
            assert answer.error is not None  # no call: refused before its key was known
            return anthropic_error(answer.error, answer.request_id, answer.headers)
        if answer.chunks is not None:
            events = anthropic_stream.events(
                answer.chunks,
                message_id=message_id,
                model=call.served.upstream_id if call.served else call.requested_model,
                input_estimate=call.prompt_tokens,
            )
            return sse_response(events, answer.headers)
        if answer.native is not None:  # passed through: Claude's own message
            return json_response({**answer.native, "id": message_id}, answer.headers)
        body = anthropic_messages.from_chat(answer.body or {}, message_id=message_id)
        return json_response(body, answer.headers)


class CountTokensView(InlineAPIView):
    """POST /v1/messages/count_tokens: the gateway's estimate of the prompt's tokens
    (about 4 characters a token; no provider is asked and nothing is billed)."""

    @count_tokens_doc
    async def post(self, request):
        headers = bridge.InboundHeaders(RequestHeaders(request))
        request_id = "req_" + uuid.uuid4().hex
        try:
            await authenticate(headers.get("authorization"), headers.meta)
            _anthropic_headers(RequestHeaders(request))
            data = parse_json(read_body(request._request))
            stripped, _only = anthropic_native.split_native(data)
            chat = anthropic_messages.to_chat(stripped, count_only=True)
        except GatewayError as error:
            return anthropic_error(error, request_id, {})
        return json_response(
            {"input_tokens": tokens.estimate_prompt(chat)},
            {"X-Request-ID": request_id, "X-Gateway-Estimate": "true"},
        )


class ResponsesView(InlineAPIView):
    """POST /v1/responses: OpenAI's Responses API, JSON or SSE (nothing is stored)."""

    @responses_doc
    async def post(self, request):
        headers = RequestHeaders(request)
        data: dict[str, Any] = {}

        def translate() -> bridge.Translated:
            parsed = parse_json(read_body(request._request))
            translated = responses.passthrough(parsed)  # refuses anything but an object
            data.update(parsed)
            return translated

        answer = await bridge.run_chat(headers=headers, translate=translate, endpoint="responses")
        call = answer.call
        response_id = "resp_" + answer.request_id[4:]
        if answer.error is not None or call is None:
            assert answer.error is not None  # no call: refused before its key was known
            error = responses.renamed(answer.error)
            return error_response(error, extra_headers=answer.headers)
        if answer.chunks is not None:
            model = call.served.upstream_id if call.served else call.requested_model
            events = responses_stream.events(
                answer.chunks, data, response_id=response_id, model=model
            )
            return sse_response(events, answer.headers)
        if answer.native is not None:  # passed through: OpenAI's own response
            return json_response({**answer.native, "id": response_id}, answer.headers)
        body = responses.from_chat(answer.body or {}, data, response_id=response_id)
        return json_response(body, answer.headers)
