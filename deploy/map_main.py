"""Entry point of the MAP's application folder (``/opt/holoscan/app`` in the container).

The packager copies one folder to ``/opt/holoscan/app`` and its command is ``python3
/opt/holoscan/app``. This project's code spans the ``app`` and ``operators`` packages, so
``scripts/package_map.py`` stages both beside this file (saved as ``__main__.py``); it runs
``app/__main__.py`` exactly as ``python app`` does in the repository, exit code included.
"""

import runpy

runpy.run_module("app", run_name="__main__", alter_sys=True)
