"""For people testing against the worker, as trio ships `trio.testing` (a public, documented
part of the package; trio test suites, e.g. pytest-trio):

- `inprocess.inprocess_worker`: the whole worker on the scripted fake engine
  (`engine.fake.FakeScript`) in virtual time, its ASGI app called in process;
- `asgi.asgi_request`: one HTTP exchange with an ASGI app, streamed bodies read as SSE events;
- `stack.actor_stack`: the actors alone (ModelActor, SlotScheduler, SessionPool) on the fake
  engine;
- `process.WorkerProcess` / `FakeWorkerProcess`: the worker as a subprocess on a port (the
  real model or the fake engine), for any client in any test suite;
- `fake_server`: the fake-engine worker's command line (`python -m
  llm_worker_rbee.testing.fake_server`); `virtual_load`: a load in virtual time;
  `browser`: headless Chromium for the status page.

A scripted hive for the heartbeat's conversation is `hive.scripted`; the reference hive
server is `hive_stub`. The fuzz and soak drivers and the scenario harness are development
tools in `devtools/`, outside the package.
"""
