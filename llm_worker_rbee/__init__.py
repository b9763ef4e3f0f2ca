"""llm-worker-rbee: one GGUF model, one device, served through llama.cpp by trio actors."""

__version__ = "0.1.0"
