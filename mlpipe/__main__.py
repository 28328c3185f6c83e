from mlpipe.cli import main

raise SystemExit(main())
