"""Django's command line for the example shop (instrumented the same way as wsgi.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    from django.core.management import execute_from_command_line

    import examples.django_app.wsgi  # noqa: F401  configures pystrument and instruments Django

    execute_from_command_line(sys.argv)
