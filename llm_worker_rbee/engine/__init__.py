"""Engines: the step-based protocol, the llama.cpp engine and a scripted fake."""
