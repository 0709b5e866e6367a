"""edgeopt bundle code: letterbox, decoder, runner and the command line of ``run.py`` (numpy and Pillow only)."""
