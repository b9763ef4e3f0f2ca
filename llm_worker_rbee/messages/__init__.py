"""Typed messages: the only things actors send each other.

Frozen, slotted dataclasses holding plain data (and, for requests that want an answer,
the reply channel). One module per conversation.
"""
