import sys

from procwatch_agent.app import main
from procwatch_runtime.logs import configure_logging

configure_logging()
sys.exit(main(sys.argv[1:]))
