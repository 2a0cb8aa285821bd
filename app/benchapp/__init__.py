"""The week-4 practice project: a vision-model benchmark web app (Gradio) on the course's own helpers.

- :mod:`benchapp.images`: reading, checking and converting the user's images (clear messages, no tracebacks).
- :mod:`benchapp.bench`: lab 4.3's model zoo measured live (``common.benchmark``) and the memory check.
- :mod:`benchapp.course_models`: the course-trained ViT and DINO checkpoints on one image.
- :mod:`benchapp.apis`: real calls to vision-language APIs, configured by environment variables only.
- :mod:`benchapp.ui`: the Gradio Blocks page that wires them together (Korean and English labels).
"""


class InputError(ValueError):
    """Bad input from the page: the message is shown to the user as it is (no traceback, no secrets)."""
