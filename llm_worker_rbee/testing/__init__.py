"""Test support: the actor stack on the fake engine in virtual time, an in-process ASGI
client, fuzz and soak runners (the scenario harness is devtools/scenarios, outside the
package)."""
