"""The behaviour inventory (docs/BEHAVIORS.md), checked against the code and the tests.

`python -m devtools.behaviors check` (run by `make test`, and by tests/test_behaviors.py)
fails when:

- a behaviour has no covering test or scenario, or a test or scenario names an unknown id
  (tests declare `@pytest.mark.behavior("HTTP-007", ...)`, scenarios `covers = [...]`);
- a row's "where" (`module:function`, `module:Class.method`, relative to the package) no
  longer exists;
- a row's "covered by" column differs from what the tests declare (`behaviors sync`
  rewrites it), or the "Coverage gaps" section lists anything;
- something the code has appears in no behaviour: a route (the app's own url_map), a
  `serve` flag or its `LLM_WORKER_*` variable (Settings and FLAGS), a flag of another
  subcommand (the argparse tree), an environment variable the code reads, an error code or
  type it emits, a stop or finish reason, a request field, a metric, an SSE event...

`show` prints the table with each "where" as the file and line it is at now.

The modules: `inventory` reads the table, `locations` finds each "where" in the source,
`declarations` reads what the tests and scenarios declare, `runtime_facts` and
`source_facts` gather what the code has (as `facts.Fact`s), `check` compares them all and
rewrites the covered-by column (`sync`), `cli` is the command line.
"""
