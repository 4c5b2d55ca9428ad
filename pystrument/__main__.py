from pystrument.cli import main

raise SystemExit(main())
