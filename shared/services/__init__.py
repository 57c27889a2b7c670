"""What the HTTP API, the CLI, the console and the stages call. Services never import stages."""
