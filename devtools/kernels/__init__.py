"""The CPU-kernel matrix: the tests that compare texts, under more than one llama.cpp build of
the same source on this machine (`make matrix`; docs/KERNELS.md).

llama.cpp compiles its CPU kernels for a feature set (AVX2, AVX-512, VNNI, AMX), and two
kernel sets give different numbers: a promise checked under one says nothing of another. The
builds are the venv's own llama-cpp-python (native: `-march=native`) and the same sdist
compiled for a baseline AVX2 CPU (`haswell`), loaded through llama-cpp-python's
LLAMA_CPP_LIB_PATH.

Why a second library and not llama.cpp's GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS: those
build every x86 CPU variant (about a dozen ggml-cpu libraries, each a full compile) as
loadable backends into the installed package, which would change what `make test` builds
and how the worker loads llama.cpp; and the process then loads the best variant the CPU
supports (GGML_BACKEND_PATH adds a backend beside it, it does not replace it), so running
another one takes moving the better ones' files away. One extra build of only libllama and
ggml, chosen by an environment variable the installed package already reads, leaves the
installed package and the worker exactly as they are.
"""
