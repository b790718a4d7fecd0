"""Command line, configuration and orchestration of compression studies."""
