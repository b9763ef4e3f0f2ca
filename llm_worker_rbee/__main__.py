from llm_worker_rbee.cli import main

raise SystemExit(main())
