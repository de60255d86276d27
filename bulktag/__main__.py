import sys

from bulktag.cli.main import main

sys.exit(main())
