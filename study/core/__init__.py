"""The lower core: settings, errors, data, models, training, the teacher. Imports neither `objectives` nor anything above."""
