from labctl.client.main import main

raise SystemExit(main())
