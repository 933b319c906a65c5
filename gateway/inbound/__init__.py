"""Inbound formats other than OpenAI chat: Anthropic's Messages API (/v1/messages) and
OpenAI's Responses API (/v1/responses).

Each format is translated to an OpenAI chat request, run through the one chat pipeline
(`bridge.run_chat`), and the chat answer (or its stream of chunks) translated back. Routing,
fallback, the cache, budgets and the ledger are the chat pipeline's own; nothing is
reimplemented per format. What a format asks for that chat cannot carry is refused with a
400 naming it, never dropped.
"""
