"""Test support: the actor stack on the fake engine in virtual time, and (later) scenarios."""
