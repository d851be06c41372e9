from nosend.cli import main

raise SystemExit(main())
