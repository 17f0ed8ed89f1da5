from dropscale.cli import main

raise SystemExit(main())
