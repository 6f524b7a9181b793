from .cli import main
from .system import cleanup

try:
    main()
finally:
    cleanup()
